"""Random directions shaped like a tree of variables, reproducible from an explicit seed.

Every sampler uses TensorFlow's *stateless* RNG: the same ``seed`` always gives the same
direction, in eager mode, inside ``tf.function`` and on another machine with the same TF
version. A zeroth-order optimizer therefore never stores a direction: it keeps the (two-int)
seed and regenerates ``v`` when it needs it again (MeZO's memory trick).

Samplers (n = total number of scalars in the variables):

=============  ===========================================  ===============
name           distribution of one direction v              E[v vᵀ]
=============  ===========================================  ===============
gaussian       v_j ~ N(0, 1) i.i.d.                         I
rademacher     v_j = ±1 with probability ½ each             I
unit_sphere    uniform on the unit sphere ‖v‖ = 1            I / n
orthogonal     K orthonormal directions (uniform frame)     I / n (each)
=============  ===========================================  ===============

:func:`second_moment` returns the last column's scalar, so an estimator such as the forward
gradient ``(∇L·v) v / second_moment`` is unbiased for any sampler.

Caveat (TF 2.21, CPU): the stateless samplers and ``stateless_fold_in`` draw different numbers
inside an XLA-compiled function than outside one, so the direction stream of a seed depends on
the compile mode. Regenerate a direction under the same compile mode that drew it.

``rademacher`` draws a whole tree from one Philox stream (32 signs per random word, leaf i a
segment of it that :func:`rademacher_leaf` regenerates alone); ``gaussian`` draws each leaf from
its own folded seed.

With ``num_directions=None`` a sampler returns one direction (leaves shaped like the
variables); with ``num_directions=K`` every leaf gets a leading ``K`` axis, the layout
:func:`dirgrad_opt.directional.directional_derivatives` takes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from dirgrad_opt import kernels, tree

__all__ = [
    "SAMPLERS",
    "SignWords",
    "add_signs",
    "fused_signs",
    "gaussian",
    "draw_leaf",
    "get",
    "make_seed",
    "orthogonal",
    "rademacher",
    "rademacher_bits",
    "rademacher_leaf",
    "rademacher_leaf_words",
    "rademacher_words",
    "sample",
    "second_moment",
    "spread_signs",
    "unit_sphere",
]

Seed = Any
"""An int, a pair of ints, or an int32/int64 tensor of shape [2]."""


def make_seed(seed: Seed, *salt: Any) -> tf.Tensor:
    """A stateless-RNG seed (int64 tensor of shape [2]) from ``seed``, folded with ``salt``.

    ``make_seed(base, step)`` gives a fresh, reproducible seed per optimizer step.
    """
    s = tf.convert_to_tensor(seed)
    if s.dtype not in (tf.int32, tf.int64):
        raise ValueError(f"seed must be an integer or a pair of integers, got dtype {s.dtype.name}")
    s = tf.cast(s, tf.int64)
    if s.shape.rank == 0:
        s = tf.stack([s, tf.zeros_like(s)])
    elif s.shape != (2,):
        raise ValueError(f"seed must be a scalar or have shape (2,), got shape {s.shape}")
    for value in salt:
        s = tf.random.experimental.stateless_fold_in(s, tf.cast(value, tf.int64))
    return s


def _leaf_specs(variables: Any) -> list[tuple[tf.TensorShape, tf.DType]]:
    leaves = tree.flatten(variables)
    if not leaves:
        raise ValueError("variables is empty: nothing to sample a direction for")
    specs = []
    for name, leaf in zip(tree.leaf_names(variables), leaves, strict=True):
        shape = tf.TensorShape(leaf.shape)
        dtype = tf.as_dtype(leaf.dtype)
        if not shape.is_fully_defined():
            raise ValueError(f"variable '{name}' has a partly unknown shape {shape}")
        if not dtype.is_floating:
            raise ValueError(f"variable '{name}' has dtype {dtype.name}; expected floating point")
        specs.append((shape, dtype))
    return specs


def _leading(num_directions: int | None) -> list[int]:
    if num_directions is None:
        return []
    if int(num_directions) < 1:
        raise ValueError(f"num_directions must be >= 1 (or None), got {num_directions}")
    return [int(num_directions)]


def _per_leaf(variables: Any, seed: Seed, num_directions: int | None, draw: Callable) -> Any:
    base = make_seed(seed)
    lead = _leading(num_directions)
    out = [
        draw(lead + shape.as_list(), make_seed(base, i), dtype)
        for i, (shape, dtype) in enumerate(_leaf_specs(variables))
    ]
    return tf.nest.pack_sequence_as(variables, out)


def gaussian(variables: Any, seed: Seed, num_directions: int | None = None) -> Any:
    """``v_j ~ N(0, 1)`` i.i.d. for every scalar; ``E[v vᵀ] = I``.

    Args:
      variables: nest of variables (or tensors) whose shapes/dtypes the direction takes.
      seed: int, pair of ints or shape-[2] integer tensor.
      num_directions: None for one direction, K for a leading K axis on every leaf.

    Returns:
      A nest like ``variables``.
    """
    return _per_leaf(
        variables,
        seed,
        num_directions,
        lambda shape, s, dtype: tf.random.stateless_normal(shape, seed=s, dtype=dtype),
    )


def _sign_table() -> np.ndarray:
    """``[256, 8]``: row b is ``−1`` at column j if bit j of the byte b is set, else ``+1``."""
    bits = (np.arange(256)[:, None] >> np.arange(8)[None, :]) & 1
    return np.where(bits == 1, -1.0, 1.0)


_SIGNS = _sign_table()


def spread_signs(words: tf.Tensor, dtype: tf.DType, by_table: bool | None = None) -> tf.Tensor:
    """The 32 signs of every int32 word, flat: entry ``32 i + b`` is ``−1`` iff bit b of word i.

    Two implementations of the same mapping (bit b = bit j of byte k, ``b = 8k + j``; bytes in
    memory order, i.e. little-endian as on x86 and ARM, where byte k holds bits ``8k … 8k+7``):

    * ``by_table=True``: each word read as 4 bytes, each byte looked up in a ``[256, 8]``
      table of signs — one gather writes the output. TF's graph executor runs every op as its
      own pass over the data, so this is the fast one outside XLA (~1.5× faster than shifting).
    * ``by_table=False``: every word shifted 32 ways to bring bit b to the sign bit, then a
      compare and a select. XLA fuses these into one loop, and a gather inside a compiled step
      made whole steps ~1.5× slower, so this is the one under XLA.

    ``None`` picks by :func:`dirgrad_opt.directional.in_xla_context`.
    """
    if by_table is None:
        from dirgrad_opt.directional import in_xla_context

        by_table = not in_xla_context()
    words = tf.reshape(words, [-1])
    if by_table:
        byte_values = tf.cast(tf.reshape(tf.bitcast(words, tf.uint8), [-1]), tf.int32)
        return tf.reshape(tf.gather(tf.constant(_SIGNS, dtype), byte_values), [-1])
    # bit b moved to bit 31: bytes in memory order are the word's value order on little-endian
    b = np.arange(32, dtype=np.int32)
    bits = b if sys.byteorder == "little" else 8 * (3 - b // 8) + b % 8  # big-endian: byte 3 − k
    spread = tf.bitwise.left_shift(tf.reshape(words, [-1, 1]), tf.constant((31 - bits)[None, :]))
    return tf.reshape(tf.where(spread < 0, tf.constant(-1.0, dtype), tf.constant(1.0, dtype)), [-1])


_WORDS_PER_COUNTER = 4  # Philox: one counter value gives four 32-bit words


def _words(seed: tf.Tensor, count: Any, offset: int = 0) -> tf.Tensor:
    """``count`` int32 words of the Philox stream of ``seed``, from word ``offset`` on.

    ``tf.random.stateless_uniform``'s full-range words, read from counter ``c + offset/4``
    (Philox gives 4 words per counter value; ``offset`` must be a multiple of 4): the words a
    longer draw from the same seed has at ``offset …``, without drawing those before.

    The offset is added to the counter's low 64-bit word without a carry into the high word:
    a carry would occur with probability ``offset / 2⁶⁴`` (~1e-15 here), and costs ~0.14× an
    SGD step when MeZO's in-place mode regenerates every leaf three times per step (measured
    paired on the MNIST-1D MLP). If it wrapped, the leaf drawn alone would differ from the
    whole-tree draw — but no optimizer mixes the two within a step (exact mode draws the tree,
    in-place mode regenerates leaves), so each stays a fair ±1 direction.
    """
    if offset % _WORDS_PER_COUNTER:
        raise ValueError(f"offset must be a multiple of {_WORDS_PER_COUNTER}, got {offset}")
    shape = tf.reshape(count, [1])
    if not offset:  # the public op (the same words)
        return tf.random.stateless_uniform(
            shape, seed=seed, minval=None, maxval=None, dtype=tf.int32
        )
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
    return tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=shape,
        key=key,
        counter=counter + tf.constant([offset // _WORDS_PER_COUNTER, 0], tf.uint64),
        alg=tf.raw_ops.StatelessRandomGetAlg(),
        dtype=tf.int32,
    )


def _word_count(size: Any) -> Any:
    """Words holding ``size`` signs (32 per word)."""
    return (size + 31) // 32


def _signs(words: tf.Tensor, size: Any, shape: Any, dtype: tf.DType) -> tf.Tensor:
    """The first ``size`` signs of ``words`` (:func:`spread_signs`), shaped ``shape``."""
    return tf.reshape(spread_signs(words, dtype)[:size], shape)


def rademacher_bits(shape: Any, seed: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """``±1`` entries of ``shape`` from 32 signs per random word (counter-based, stateless).

    Draws ``⌈m/32⌉`` full-range int32 words with ``tf.random.stateless_uniform`` (Philox, a
    counter-based generator) and spreads each word's 32 bits over 32 entries
    (:func:`spread_signs`: entry ``32 i + b`` is ``−1`` iff bit b of word i is set). Philox's
    output bits are independent and uniform, so the entries are i.i.d. ±1 with probability ½
    — the Rademacher distribution — at 1/32 of the generator calls of one draw per entry.
    """
    if isinstance(shape, tf.Tensor):  # a dynamic shape (e.g. an unknown batch size)
        size = tf.reduce_prod(shape)
    else:
        size = 1
        for d in shape:
            size *= int(d)
    return _signs(_words(seed, _word_count(size)), size, shape, dtype)


class _Segment(NamedTuple):
    """One leaf's place in a tree's ±1 stream."""

    shape: list[int]  # with the leading K axis
    dtype: tf.DType
    size: int  # entries
    offset: int  # first word, a multiple of 4


def _segments(variables: Any, num_directions: int | None) -> list[_Segment]:
    """Per leaf of a tree: its shape, dtype, entries and first word in the stream.

    Leaf i takes ``⌈m_i/32⌉`` words rounded up to a multiple of 4 (a whole Philox counter),
    so every leaf starts at a counter boundary and can be regenerated alone.
    """
    lead = _leading(num_directions)
    out, offset = [], 0
    for shape, dtype in _leaf_specs(variables):
        full = lead + shape.as_list()
        size = tf.TensorShape(full).num_elements()
        out.append(_Segment(full, dtype, size, offset))
        offset += -(-_word_count(size) // _WORDS_PER_COUNTER) * _WORDS_PER_COUNTER
    return out


def draw_leaf(name: str, shape: Any, seed: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """One leaf of an i.i.d. sampler (``"gaussian"`` or ``"rademacher"``) drawn from ``seed``.

    What :func:`gaussian` / :func:`rademacher` draw per leaf, without their per-leaf seed fold:
    for callers that derive one seed per leaf themselves (e.g. to regenerate a leaf alone).
    """
    if name == "gaussian":
        return tf.random.stateless_normal(shape, seed=seed, dtype=dtype)
    if name == "rademacher":
        return rademacher_bits(shape, seed, dtype)
    raise ValueError(
        f"draw_leaf: '{name}' is not an i.i.d. sampler; use 'gaussian' or 'rademacher'"
    )


class SignWords(NamedTuple):
    """A ±1 direction before its signs are spread: the random words, and each leaf's segment.

    What :func:`rademacher` draws for a tree (:func:`rademacher_words`); :meth:`leaf` spreads
    one leaf, and :func:`add_signs` adds ``s·z`` to a leaf's values straight from the words.
    """

    words: tf.Tensor  # int32 words of the tree's Philox stream
    segments: list[_Segment]

    def leaf(self, index: int) -> tf.Tensor:
        """Leaf ``index`` of the direction: the numbers :func:`rademacher` gives it."""
        g = self.segments[index]
        words = self.words[g.offset : g.offset + _word_count(g.size)]
        return _signs(words, g.size, g.shape, g.dtype)


def rademacher_words(variables: Any, seed: Seed, num_directions: int | None = None) -> SignWords:
    """The words of :func:`rademacher` ``(variables, seed, num_directions)``, not yet spread."""
    segments = _segments(variables, num_directions)
    last = segments[-1]
    return SignWords(_words(make_seed(seed), last.offset + _word_count(last.size)), segments)


def rademacher(variables: Any, seed: Seed, num_directions: int | None = None) -> Any:
    """``v_j = ±1`` with probability ½ each, i.i.d.; ``E[v vᵀ] = I`` (Args as :func:`gaussian`).

    The whole tree from **one** Philox stream of ``make_seed(seed)``, 32 signs per word
    (:func:`spread_signs`): leaf i is the segment of words :func:`rademacher_leaf` regenerates
    alone. Segments are disjoint, so the leaves are independent. One draw and one spread for
    the tree instead of one per leaf: TF's executor pays per op, and on the MNIST-1D MLP (6
    leaves) this halves the cost of a direction.
    """
    drawn = rademacher_words(variables, seed, num_directions)
    segments = drawn.segments
    dtypes = {seg.dtype for seg in segments}
    if len(dtypes) == 1:  # one spread for the tree, split at the segment boundaries
        flat = spread_signs(drawn.words, dtypes.pop())
        out = [tf.reshape(flat[32 * g.offset : 32 * g.offset + g.size], g.shape) for g in segments]
    else:
        out = [drawn.leaf(i) for i in range(len(segments))]
    return tf.nest.pack_sequence_as(variables, out)


def rademacher_leaf_words(
    variables: Any, seed: Seed, index: int, num_directions: int | None = None
) -> SignWords:
    """The words of :func:`rademacher_leaf` alone, not yet spread: its segment of the stream,
    drawn from Philox's counter at the segment's start and moved to offset 0."""
    segments = _segments(variables, num_directions)
    if not 0 <= index < len(segments):
        raise ValueError(f"rademacher_leaf: index {index} out of range for {len(segments)} leaves")
    g = segments[index]
    words = _words(make_seed(seed), _word_count(g.size), g.offset)
    return SignWords(words, [g._replace(offset=0)])


def rademacher_leaf(
    variables: Any, seed: Seed, index: int, num_directions: int | None = None
) -> tf.Tensor:
    """Leaf ``index`` of :func:`rademacher` ``(variables, seed, num_directions)``, drawn alone.

    The same numbers, from the leaf's own words of the stream (Philox's counter moved to the
    segment's start): what MeZO's in-place mode needs to regenerate ``z`` one leaf at a time.
    :func:`rademacher_leaf_words` gives those words unspread, for :func:`add_signs`.
    """
    return rademacher_leaf_words(variables, seed, index, num_directions).leaf(0)


_FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def fused_signs(dtypes: Any = ()) -> bool:
    """Whether :func:`add_signs` runs the fused kernel here, for leaves of ``dtypes``.

    Yes when :func:`dirgrad_opt.kernels.library` has it (built and loaded on the first call),
    the code is not being compiled by XLA (the kernel has no XLA lowering), no GPU is visible
    (it is a CPU kernel) and every dtype is a float type it is built for.
    """
    from dirgrad_opt.directional import in_xla_context

    if any(tf.as_dtype(d) not in _FUSED_DTYPES for d in dtypes):
        return False
    if in_xla_context() or tf.config.list_logical_devices("GPU"):
        return False
    return kernels.library() is not None


def add_signs(
    values: Any, drawn: SignWords, index: int, scales: Any, fused: bool | None = None
) -> list[tf.Tensor]:
    """``[values + s·z for s in scales]``: ``z`` leaf ``index`` of the ±1 direction ``drawn``.

    One pass over ``values`` and the words for all the scales, ``z`` never materialised, with
    the fused kernel (``fused=None``: where :func:`fused_signs`); otherwise stock ops
    (:meth:`SignWords.leaf` spread once, then ``values + s * z`` per scale). Both give the same
    bits: ``s·z`` is ``±s`` exactly and ``w + (−s)`` is ``w − s``.

    Args:
      values: a tensor shaped like the leaf.
      drawn: the direction's words and segments (:func:`rademacher_words`).
      index: which leaf of ``drawn``.
      scales: scalars ``s`` (floats or scalar tensors), cast to the leaf's dtype.
      fused: force the kernel (``True``; an error where there is none) or stock ops.
    """
    g = drawn.segments[index]
    values = tf.convert_to_tensor(values, g.dtype)
    scales = [
        tf.cast(s, g.dtype) if isinstance(s, tf.Tensor) else tf.constant(s, g.dtype) for s in scales
    ]
    if fused is None:
        fused = fused_signs([g.dtype])
    if fused:
        library = kernels.library()
        if library is None:
            raise RuntimeError("add_signs(fused=True): the fused kernel is not available")
        return list(library.dirgrad_sign_axpy(values, drawn.words, scales, offset=g.offset))
    z = drawn.leaf(index)
    return [values + s * z for s in scales]


def _flat(directions: Any, k: int) -> tf.Tensor:
    """Concatenates a batched tree into a ``[K, n]`` matrix."""
    return tf.concat([tf.reshape(d, [k, -1]) for d in tree.flatten(directions)], axis=1)


def _unflat(matrix: tf.Tensor, variables: Any, k: int) -> Any:
    out, offset = [], 0
    for shape, dtype in _leaf_specs(variables):
        size = shape.num_elements()
        out.append(tf.cast(tf.reshape(matrix[:, offset : offset + size], [k, *shape]), dtype))
        offset += size
    return tf.nest.pack_sequence_as(variables, out)


def unit_sphere(variables: Any, seed: Seed, num_directions: int | None = None) -> Any:
    """Uniform on the unit sphere of the whole tree: ``v = g / ‖g‖``, g Gaussian; ``E[v vᵀ] = I/n``.

    The norm is over all leaves together (one direction in the model's whole weight space).
    """
    k = 1 if num_directions is None else _leading(num_directions)[0]
    g = gaussian(variables, seed, k)
    norms = tf.norm(_flat(g, k), axis=1)  # [K]
    out = tf.nest.map_structure(
        lambda d: d / tf.reshape(tf.cast(norms, d.dtype), [k] + [1] * (d.shape.rank - 1)), g
    )
    if num_directions is None:
        return tf.nest.map_structure(lambda d: d[0], out)
    return out


def orthogonal(variables: Any, seed: Seed, num_directions: int) -> Any:
    """K mutually orthogonal unit directions (a uniformly random orthonormal frame).

    ``Q`` from the QR factorisation of an ``n × K`` Gaussian matrix (signs fixed by ``diag(R)``
    so the frame is Haar-distributed). Each direction has ``‖v_k‖ = 1``, ``v_k·v_l = 0`` for
    k ≠ l, and ``E[v_k v_kᵀ] = I/n``. Requires ``K ≤ n``.

    Args:
      variables: nest of variables.
      seed: as :func:`gaussian`.
      num_directions: K (required, 1 ≤ K ≤ n).

    Returns:
      A nest like ``variables`` with a leading K axis on every leaf.
    """
    k = _leading(num_directions)[0] if num_directions is not None else 0
    if k == 0:
        raise ValueError("orthogonal needs num_directions=K (K >= 1)")
    n = sum(shape.num_elements() for shape, _ in _leaf_specs(variables))
    if k > n:
        raise ValueError(
            f"orthogonal: num_directions={k} exceeds the dimension n={n} of the variables; "
            "at most n directions can be mutually orthogonal"
        )
    g = gaussian(variables, seed, k)
    dtype = tf.float64  # QR in float64 so the frame is orthogonal to rounding
    mat = tf.cast(_flat(g, k), dtype)  # [K, n]
    q, r = tf.linalg.qr(tf.transpose(mat))  # q: [n, K]
    signs = tf.where(tf.linalg.diag_part(r) < 0, -tf.ones([k], dtype), tf.ones([k], dtype))
    frame = tf.transpose(q * signs[tf.newaxis, :])  # [K, n]
    return _unflat(frame, variables, k)


SAMPLERS: dict[str, Callable[..., Any]] = {
    "gaussian": gaussian,
    "rademacher": rademacher,
    "unit_sphere": unit_sphere,
    "orthogonal": orthogonal,
}
"""Sampler registry: name -> ``fn(variables, seed, num_directions)``."""


def get(name: str) -> Callable[..., Any]:
    """The sampler called ``name`` (see :data:`SAMPLERS`); ``ValueError`` if unknown."""
    if name not in SAMPLERS:
        raise ValueError(
            f"unknown direction distribution {name!r}; choose one of {sorted(SAMPLERS)}"
        )
    return SAMPLERS[name]


def sample(name: str, variables: Any, seed: Seed, num_directions: int | None = None) -> Any:
    """``get(name)(variables, seed, num_directions)``."""
    return get(name)(variables, seed, num_directions)


def second_moment(name: str, variables: Any) -> float:
    """The scalar s with ``E[v vᵀ] = s·I`` for the sampler ``name`` (1, or 1/n for unit norm)."""
    get(name)
    if name in ("gaussian", "rademacher"):
        return 1.0
    n = sum(shape.num_elements() for shape, _ in _leaf_specs(variables))
    return 1.0 / n

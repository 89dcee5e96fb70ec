"""Torch sketcher: sedmon_core.sketch's definition evaluated on the parameters' own device.

Same numbers as the numpy reference (to float64 rounding), chunk by chunk: the extra
memory is a fixed buffer (at most `chunk_elems` float64, 16 MB by default on CUDA, 8 MB
on CPU) and a 1 MB bucket matrix, never a copy of the model. No autograd. Non-contiguous
tensors are read in row ranges; shards (DTensor, FSDP flat shards) are sketched with
their global element offsets, and `all_reduce_sketches` sums the partial sketches over
ranks.

Countsketch per chunk of whole blocks (rows of BLOCK = 64 x 64 elements): buf =
float64(x) (one read-convert pass); the block's sign words applied as two broadcast
multiplies of the (rows, 64, 64) view by the run signs (rows, 64, 1) and the lane signs
(rows, 1, 64), both in cache; one scatter_add along each row into Z (rows x 2k) at
column table_bucket[j] + k * (table_sign[j] < 0), so the table's signs cost no pass of
their own. Z's rows are summed by their block shift into a (k, 2k) matrix (one
index_add per Z's worth of rows), and at the end y[(shift + b) mod k] += by_shift[shift,
b] - by_shift[shift, k + b]. The per-block (shift, run word, lane word) come from
sedmon_core on the host, once per parameter layout (cached), and travel to the device in
one copy; the sign words become +-1 through a 256-entry byte table, a Z's worth of rows
at a time.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sedmon._deferred import Deferred, Ready
from sedmon_core.sketch import (
    BLOCK,
    GAMMA,
    LOW32,
    PROJECTED_METHODS,
    SketchSpec,
    countsketch_block_words,
    countsketch_table,
    parameter_key,
)

_MUL1 = -4658895280553007687  # 0xBF58476D1CE4E5B9, as in sedmon_core.sketch
_MUL2 = -7723592293110705685  # 0x94D049BB133111EB
CPU_CHUNK_ELEMS = 1 << 20
"""Elements per countsketch step on CPU: an 8 MB float64 buffer. Smaller steps pay the
per-step op overhead more often (x1.2 the time at 256 K elements, x1.5-2 at 64 K)."""
CUDA_CHUNK_ELEMS = 1 << 21
"""Elements per step on CUDA: a 16 MB buffer, few kernel launches for a 124M model."""
_Z_BYTES = 1 << 20  # bucket rows (Z) kept before they are summed by shift: 1 MB
_GAUSSIAN_ENTRIES = 1 << 18  # k x n entries of the dense matrix evaluated per step
_CACHE_SIZE = 16
_BYTE_BITS = (np.arange(256)[:, None] >> np.arange(8) & 1).astype(np.float64)


@dataclass(frozen=True)
class ShardPiece:
    """Elements of parameter `name`: `tensor` read row-major, its first element at flat
    index `offset` of the whole parameter (0 for an unsharded tensor)."""

    name: str
    tensor: torch.Tensor
    offset: int = 0


@dataclass(frozen=True)
class _Tables:
    bucket: torch.Tensor  # (BLOCK,) int64
    sign: torch.Tensor  # (BLOCK,) float64
    column: torch.Tensor  # (BLOCK,) int64: bucket, plus k where the sign is -1
    rotate: torch.Tensor  # (k * k,) int64: (shift + b) mod k at [shift, b]
    byte_signs: torch.Tensor  # (256, 8) float64: byte_signs[b, i] = -1 where bit i of b


_tables_cache: OrderedDict[tuple[SketchSpec, str], _Tables] = OrderedDict()
_plans_cache: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()


def _cached(cache: OrderedDict[Any, Any], key: Any, make: Any) -> Any:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    value = make()
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return value


def _to_device(host: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host array on `device`. To CUDA through pinned memory with non_blocking=True: a
    pageable copy would make the host wait for the whole stream (the training kernels
    queued before it); torch keeps the pinned buffer until the copy is done."""
    tensor = torch.from_numpy(host) if isinstance(host, np.ndarray) else host
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _tables(spec: SketchSpec, device: torch.device) -> _Tables:
    def make() -> _Tables:
        bucket, sign = countsketch_table(spec)
        rotate = (torch.arange(spec.dim)[:, None] + torch.arange(spec.dim)).remainder(spec.dim)
        return _Tables(
            _to_device(bucket, device),
            _to_device(sign, device),
            _to_device(bucket + spec.dim * (sign < 0), device),
            _to_device(rotate.reshape(-1), device),
            _to_device(1.0 - 2.0 * _BYTE_BITS, device),
        )

    return _cached(_tables_cache, (spec, str(device)), make)


def _block_span(piece: ShardPiece) -> tuple[int, int]:
    """First global block and number of blocks that the piece touches."""
    n = piece.tensor.numel()
    first = piece.offset // BLOCK
    return first, (piece.offset + n - 1) // BLOCK - first + 1 if n else 0


def _plan(spec: SketchSpec, device: torch.device, pieces: Sequence[ShardPiece]) -> torch.Tensor:
    """(rows, 3) int64 on device: (shift, run word, lane word) of every block row the
    pieces touch, in order (24 bytes per 4096 elements)."""
    layout = tuple((p.name, p.offset, p.tensor.numel()) for p in pieces)

    def make() -> torch.Tensor:
        rows = [np.zeros((0, 3), np.int64)]
        for piece in pieces:
            first, count = _block_span(piece)
            blocks = np.arange(first, first + count, dtype=np.int64)
            rows.append(np.stack(countsketch_block_words(spec, piece.name, blocks), axis=1))
        return _to_device(np.concatenate(rows), device)

    return _cached(_plans_cache, (spec, str(device), layout), make)


def _flat_range(t: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """Elements [a, b) of t in row-major order, 1-D: a view when t is contiguous, else a
    copy of at most about 3 (b - a) elements (never the whole tensor)."""
    if t.is_contiguous() or t.dim() == 0:
        return t.reshape(-1)[a:b]
    row = t[0].numel()
    r0, r1 = a // row, -(-b // row)
    if row <= b - a:
        return t[r0:r1].reshape(-1)[a - r0 * row : b - r0 * row]
    parts = [
        _flat_range(t[r], max(a, r * row) - r * row, min(b, (r + 1) * row) - r * row)
        for r in range(r0, r1)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Countsketch:
    """Accumulates block rows of one group on one device; see the module docstring."""

    def __init__(self, spec: SketchSpec, device: torch.device, chunk_elems: int) -> None:
        self.spec = spec
        self.k = spec.dim
        self.tables = _tables(spec, device)
        self.fill_rows = max(1, chunk_elems // BLOCK)
        z_rows = max(1, _Z_BYTES // (16 * self.k)) // self.fill_rows * self.fill_rows
        self.z_rows = max(self.fill_rows, z_rows)
        f64 = torch.float64
        self.buf = torch.empty(self.fill_rows, BLOCK, dtype=f64, device=device)
        self.z = torch.zeros(self.z_rows, 2 * self.k, dtype=f64, device=device)
        self.by_shift = torch.zeros(self.k, 2 * self.k, dtype=f64, device=device)
        self.nb = 0  # rows filled in buf
        self.nz = 0  # rows accumulated in z
        self.zbase = 0  # plan row of z[0]
        self.plan = torch.zeros((0, 3), dtype=torch.int64, device=device)
        self.signs = torch.zeros((0, 2, 64), dtype=f64, device=device)
        self.signs_base = 0  # plan row of signs[0]
        self._byte_shifts = torch.arange(0, 64, 8, dtype=torch.int64, device=device)

    def _signs(self, first: int, nb: int) -> torch.Tensor:
        """(nb, 2, 64) float64 run and lane signs of plan rows [first, first + nb),
        evaluated for a whole z's worth of rows at a time (few small ops per chunk)."""
        end = self.signs_base + self.signs.shape[0]
        if first < self.signs_base or first + nb > end:
            words = self.plan[first : first + max(nb, self.z_rows), 1:].contiguous()
            if sys.byteorder == "little":  # bytes of a word low to high: bits 8i .. 8i + 7
                octets = words.view(torch.uint8).reshape(-1).to(torch.int64)
            else:
                octets = ((words[:, :, None] >> self._byte_shifts) & 255).reshape(-1)
            self.signs = self.tables.byte_signs.index_select(0, octets).view(-1, 2, 64)
            self.signs_base = first
        at = first - self.signs_base
        return self.signs[at : at + nb]

    def _flush_buf(self) -> None:
        if self.nz + self.nb > self.z_rows:
            self._flush_z()
        nb = self.nb
        if nb:
            signs = self._signs(self.zbase + self.nz, nb)
            rows = self.buf[:nb].view(nb, 64, 64)
            rows.mul_(signs[:, 0, :, None]).mul_(signs[:, 1, None, :])
            index = self.tables.column.expand(nb, BLOCK)
            self.z[self.nz : self.nz + nb].scatter_add_(1, index, self.buf[:nb])
            self.nz += nb
            self.nb = 0

    def _flush_z(self) -> None:
        """Sum z's rows by their block shift: by_shift[s] += z[row] (one pass over z)."""
        nz, base = self.nz, self.zbase
        if nz:
            z = self.z[:nz]
            self.by_shift.index_add_(0, self.plan[base : base + nz, 0], z)
            z.zero_()
        self.zbase += nz
        self.nz = 0

    def _rotate(self) -> torch.Tensor:
        """y[(s + b) mod k] += by_shift[s, b] - by_shift[s, k + b]: (k,) float64."""
        signed = self.by_shift[:, : self.k] - self.by_shift[:, self.k :]
        y = torch.zeros(self.k, dtype=torch.float64, device=signed.device)
        return y.index_add_(0, self.tables.rotate, signed.reshape(-1))

    def add(self, data: torch.Tensor, front: int) -> None:
        """Add 1-D `data` whose first element sits at position `front` of a fresh block row;
        len(data) + front <= free rows * BLOCK."""
        n = data.numel()
        rows = -(-(front + n) // BLOCK)
        flat = self.buf[self.nb : self.nb + rows].view(-1)
        if front:
            flat[:front].zero_()
        if front + n < flat.numel():
            flat[front + n :].zero_()
        flat[front : front + n].copy_(data)
        self.nb += rows

    def run(self, pieces: Sequence[ShardPiece]) -> torch.Tensor:
        """The sketch (k,) float64 of all pieces (each piece's rows are its own)."""
        self.plan = _plan(self.spec, self.buf.device, pieces)
        for piece in pieces:
            n = piece.tensor.numel()
            pos = 0
            while pos < n:
                if self.nb == self.fill_rows:
                    self._flush_buf()
                front = (piece.offset + pos) % BLOCK
                m = min(n - pos, (self.fill_rows - self.nb) * BLOCK - front)
                self.add(_flat_range(piece.tensor, pos, pos + m), front)
                pos += m
        self._flush_buf()
        self._flush_z()
        return self._rotate()


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    return (z >> s) & ((1 << (64 - s)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """sedmon_core.sketch.mix64 on an int64 tensor (any device); same integers."""
    z = z ^ _shr(z, 30)
    z.mul_(_MUL1)
    z.bitwise_xor_(_shr(z, 27))
    z.mul_(_MUL2)
    return z.bitwise_xor_(_shr(z, 31))


def countsketch_buckets_signs(
    spec: SketchSpec, name: str, global_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The torch path's (bucket int64, sign float64) of elements `global_index` of `name`:
    block tables on the index's device, as the sketcher uses them."""
    device = global_index.device
    tables = _tables(spec, device)
    block = global_index // BLOCK
    first = int(block.min()) if block.numel() else 0
    count = int(block.max()) - first + 1 if block.numel() else 0
    span = torch.zeros(1).expand(count * BLOCK)  # no memory: only its size is read
    plan = _plan(spec, device, [ShardPiece(name, span, first * BLOCK)])
    row, j = plan[block - first], global_index % BLOCK
    bucket = (row[..., 0] + tables.bucket[j]) % spec.dim
    run_sign = 1 - 2 * ((row[..., 1] >> (j // 64)) & 1)
    lane_sign = 1 - 2 * ((row[..., 2] >> (j % 64)) & 1)
    return bucket, tables.sign[j] * (run_sign * lane_sign).to(torch.float64)


def gaussian_columns(spec: SketchSpec, name: str, global_index: torch.Tensor) -> torch.Tensor:
    """sedmon_core.sketch.gaussian_columns on the index's device: (k, n) float64."""
    index = global_index.reshape(-1).to(torch.int64)
    element = mix64((index + 1) * GAMMA + parameter_key(spec.seed, name))
    pairs = (spec.dim + 1) // 2
    word = (torch.arange(pairs, dtype=torch.int64, device=index.device) + 1) * GAMMA
    h = mix64(element[None, :] + word[:, None])
    u1 = (_shr(h, 32).to(torch.float64) + 0.5) * 2.0**-32
    angle = (h & LOW32).to(torch.float64) * (2.0 * np.pi * 2.0**-32)
    radius = torch.sqrt(-2.0 * torch.log(u1))
    normals = torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=1)
    return normals.reshape(2 * pairs, -1)[: spec.dim] / np.sqrt(spec.dim)


def _gaussian(spec: SketchSpec, pieces: Sequence[ShardPiece]) -> torch.Tensor:
    device = pieces[0].tensor.device
    y = torch.zeros(spec.dim, dtype=torch.float64, device=device)
    step = max(1, _GAUSSIAN_ENTRIES // spec.dim)
    for piece in pieces:
        n = piece.tensor.numel()
        for pos in range(0, n, step):
            data = _flat_range(piece.tensor, pos, min(n, pos + step)).to(torch.float64)
            start = piece.offset + pos
            index = torch.arange(start, start + data.numel(), dtype=torch.int64, device=device)
            y.addmv_(gaussian_columns(spec, piece.name, index), data)
    return y


def _check_projected(spec: SketchSpec) -> None:
    if spec.method not in PROJECTED_METHODS:
        raise ValueError(f"method {spec.method!r} is not a projection; nothing to sketch here")


@torch.no_grad()
def sketch_pieces(
    spec: SketchSpec, pieces: Iterable[ShardPiece], chunk_elems: int | None = None
) -> torch.Tensor:
    """Sum of S(piece.name, piece.tensor at piece.offset) over pieces: (k,) float64.

    All pieces on one device; the result lives there. chunk_elems: elements per
    countsketch step (default CPU_CHUNK_ELEMS or CUDA_CHUNK_ELEMS).
    """
    _check_projected(spec)
    todo = [ShardPiece(p.name, p.tensor.detach(), p.offset) for p in pieces]
    todo = [p for p in todo if p.tensor.numel()]
    if not todo:
        return torch.zeros(spec.dim, dtype=torch.float64)
    devices = {p.tensor.device for p in todo}
    if len(devices) > 1:
        raise ValueError(f"pieces on several devices {sorted(map(str, devices))}: one at a time")
    if spec.method == "gaussian":
        return _gaussian(spec, todo)
    device = todo[0].tensor.device
    if chunk_elems is None:
        chunk_elems = CUDA_CHUNK_ELEMS if device.type == "cuda" else CPU_CHUNK_ELEMS
    return _Countsketch(spec, device, chunk_elems).run(todo)


def sketch_tensor(
    spec: SketchSpec,
    name: str,
    tensor: torch.Tensor,
    offset: int = 0,
    chunk_elems: int | None = None,
) -> torch.Tensor:
    """S(name, tensor) (k,) float64 on the tensor's device; `offset` is the global flat
    index of the tensor's first element in parameter `name` (non-zero for a shard)."""
    return sketch_pieces(spec, [ShardPiece(name, tensor, offset)], chunk_elems)


def _is_dtensor(tensor: torch.Tensor) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch without distributed
        return False
    return isinstance(tensor, DTensor)


def dtensor_pieces(name: str, tensor: torch.Tensor) -> list[ShardPiece]:
    """This rank's part of a DTensor as pieces with global offsets (empty where another
    rank holds the same replica, so that summing over ranks counts every element once).

    Shard(0) (FSDP2) gives one piece; Shard(d > 0) one piece per run of rows that is
    contiguous in the global flat order. Partial placements are refused.
    """
    from torch.distributed.tensor import Partial, Replicate
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    mesh, placements = tensor.device_mesh, tensor.placements  # type: ignore[attr-defined]
    coordinate = mesh.get_coordinate()
    if coordinate is None:  # this rank is not in the mesh
        return []
    for dim, placement in enumerate(placements):
        if isinstance(placement, Partial):
            raise ValueError(f"{name}: a Partial DTensor is not a parameter shard")
        if isinstance(placement, Replicate) and coordinate[dim] != 0:
            return []
    local = tensor.to_local()  # type: ignore[attr-defined]
    shape = tuple(tensor.shape)
    _, offsets = compute_local_shape_and_global_offset(shape, mesh, placements)
    if local.numel() == 0:
        return []
    # dims after `split` are whole, so each index over dims [0, split) is one flat run
    split = max((d for d in range(len(shape)) if local.shape[d] != shape[d]), default=0)
    strides = [int(np.prod(shape[d + 1 :])) for d in range(len(shape))]
    pieces = []
    for index in np.ndindex(*local.shape[:split]):
        outer = tuple(int(i) for i in index)
        start = sum((offsets[d] + i) * strides[d] for d, i in enumerate(outer))
        start += offsets[split] * strides[split] if shape else 0
        pieces.append(ShardPiece(name, local[outer] if outer else local, start))
    return pieces


def all_reduce_sketches(
    sketches: Mapping[str, torch.Tensor], group: Any = None
) -> dict[str, torch.Tensor]:
    """Sum partial sketches over the ranks of `group` (one all_reduce for all groups).

    Returns the sketches unchanged when torch.distributed is not initialised.
    """
    import torch.distributed as dist

    names = list(sketches)
    if not names or not (dist.is_available() and dist.is_initialized()):
        return dict(sketches)
    flat = torch.cat([sketches[n].reshape(-1) for n in names])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    sizes = [sketches[n].numel() for n in names]
    return dict(zip(names, torch.split(flat, sizes), strict=True))


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def _identity(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    full = [t.full_tensor() if _is_dtensor(t) else t for t in tensors]  # type: ignore[attr-defined]
    if not full:
        return np.zeros(0, dtype=np.float64)
    if len({t.device for t in full}) == 1:
        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in full])
        return flat.cpu().numpy()
    return np.concatenate([t.detach().reshape(-1).cpu().double().numpy() for t in full])


class PendingSketch(Deferred):
    """{group: sketch float64 numpy} on its way to host memory; `result()` waits for it.

    CUDA sketches are copied into pinned host memory with non_blocking=True behind a CUDA
    event, so the thread that made them (the training thread) does not wait for the
    stream; `result()` (the sender thread) waits on the event, then reads the numbers.
    CPU sketches are read at once.
    """

    def __init__(
        self,
        dim: int,
        groups: Sequence[str],
        copies: Sequence[tuple[list[str], torch.Tensor, torch.cuda.Event | None]],
    ) -> None:
        super().__init__()
        self._dim = dim
        self._groups = list(groups)
        self._copies = list(copies)
        self.nbytes = 8 * dim * len(self._groups)

    def _compute(self) -> dict[str, np.ndarray]:
        out = {g: np.zeros(self._dim, dtype=np.float64) for g in self._groups}
        for names, host, event in self._copies:
            if event is not None:
                event.synchronize()  # the copy into `host` is done (the GIL is released)
            for group, row in zip(names, host.numpy(), strict=True):
                out[group] += row
        self._copies = []  # the pinned buffers go back to torch's cache
        return out


@torch.no_grad()
def sketch_groups(
    spec: SketchSpec,
    named_params: Sequence[tuple[str, torch.Tensor]],
    groups: Mapping[str, Sequence[str]],
    *,
    chunk_elems: int | None = None,
    reduce: bool | None = None,
) -> dict[str, np.ndarray]:
    """{group: sketch float64 numpy} for groups of parameter names.

    named_params: (name, tensor) pairs; DTensors are sketched shard by shard. reduce:
    all-reduce the partial sketches over torch.distributed's default group; None means
    when some parameter is a DTensor (then unsharded tensors count on rank 0 only).
    Projected methods give (k,) per group, identity the group's elements in its order.
    Per device one device-to-host transfer. Waits for the device (see
    `sketch_groups_async` for the variant that does not).
    """
    result: dict[str, np.ndarray] = sketch_groups_async(
        spec, named_params, groups, chunk_elems=chunk_elems, reduce=reduce
    ).result()
    return result


@torch.no_grad()
def sketch_groups_async(
    spec: SketchSpec,
    named_params: Sequence[tuple[str, torch.Tensor]],
    groups: Mapping[str, Sequence[str]],
    *,
    chunk_elems: int | None = None,
    reduce: bool | None = None,
) -> Deferred:
    """`sketch_groups`, returning once the work is queued on the device: its `result()` is
    the {group: numpy} dict. On CPU the sketch is computed before this returns. On CUDA the
    caller does not wait for the stream, except where torch.distributed does (with reduce:
    a gloo all-reduce needs the numbers on the host; NCCL's is queued on the device) and
    for `identity` (the exact parameters, for small models: copied synchronously)."""
    tensors = dict(named_params)
    missing = [n for names in groups.values() for n in names if n not in tensors]
    if missing:
        raise KeyError(f"groups name unknown parameters: {missing[:5]}")
    if spec.method == "identity":
        exact = {g: _identity([tensors[n] for n in names]) for g, names in groups.items()}
        return Ready(exact, sum(v.nbytes for v in exact.values()))
    _check_projected(spec)
    sharded = any(_is_dtensor(t) for t in tensors.values())
    if reduce is None:
        reduce = sharded
    owner = not reduce or _rank() == 0
    partial: dict[str, list[torch.Tensor]] = {}
    for group, names in groups.items():
        by_device: dict[torch.device, list[ShardPiece]] = {}
        for name in names:
            tensor = tensors[name]
            if _is_dtensor(tensor):
                pieces = dtensor_pieces(name, tensor)
            else:
                pieces = [ShardPiece(name, tensor)] if owner else []
            for piece in pieces:
                by_device.setdefault(piece.tensor.device, []).append(piece)
        partial[group] = [sketch_pieces(spec, p, chunk_elems) for p in by_device.values()]
    return _to_host(spec, partial, reduce)


def _to_host(
    spec: SketchSpec, partial: Mapping[str, list[torch.Tensor]], reduce: bool
) -> PendingSketch:
    """Sum the per-device partial sketches (and, with reduce, over ranks); one
    device-to-host copy per device, asynchronous from CUDA."""
    if reduce:
        device = _reduce_device()
        summed = {}
        for group, parts in partial.items():
            total = _zeros(spec, device)
            for part in parts:
                total += part.to(device)
            summed[group] = total
        partial = {g: [t] for g, t in all_reduce_sketches(summed).items()}
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for group, parts in partial.items():
        for part in parts:
            by_device.setdefault(part.device, []).append((group, part))
    copies: list[tuple[list[str], torch.Tensor, torch.cuda.Event | None]] = []
    for device, items in by_device.items():
        names = [g for g, _ in items]
        stacked = torch.stack([t for _, t in items])
        if device.type == "cuda":
            host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            host.copy_(stacked, non_blocking=True)  # queued on the stream, after the sketch
            event = torch.cuda.Event(blocking=True)  # synchronize() sleeps, does not spin
            event.record(torch.cuda.current_stream(device))
            copies.append((names, host, event))
        else:
            copies.append((names, stacked.cpu(), None))
    return PendingSketch(spec.dim, list(partial), copies)


def _zeros(spec: SketchSpec, device: torch.device) -> torch.Tensor:
    return torch.zeros(spec.dim, dtype=torch.float64, device=device)


def _reduce_device() -> torch.device:
    """The device collectives of the default group run on (CUDA for NCCL)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

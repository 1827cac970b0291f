"""Fused GPU kernels (Triton) of the stencil convolution: no ``Z = S @ X`` in global memory.

The convolution ``y_i = Σ_b (Σ_e v_e x_{j(e)}) W_b`` (rows ``b * n_dst + i`` of a gather
structure, see :meth:`dinet.neighbors.Stencil.gather_structure`) is computed per block of
destination points: the block gathers its neighbours' values, forms the basis integrals
``z_b`` in registers and multiplies them by ``W_b`` with ``tl.dot`` (tensor cores), so the
K-times-larger intermediate never leaves the chip. Three kernels cover forward and backward:

- :func:`gather_conv`: the forward, and the input gradient (the same kernel on the
  transposed structure with ``W_bᵀ``);
- :func:`gather_conv_weight_grad`: ``∂W_b = Σ_i z_b[i]ᵀ g[i]``, per-program partial sums
  added in a fixed order (deterministic, no atomics);
- :func:`gather_conv_values_grad`: ``∂v_e = Σ_t (g_t[i] W_bᵀ) · x_t[j]`` for learned kernel
  values (each entry is owned by one program: deterministic).

They run wherever Triton can launch: CUDA, or the CPU under Triton's interpreter
(``TRITON_INTERPRET=1``), which is how the test suite holds them to the reference.
This module imports Triton; import it only when Triton is installed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["gather_conv", "gather_conv_values_grad", "gather_conv_weight_grad"]

#: Programs the weight gradient splits the destination points into (its partial sums).
WEIGHT_GRAD_CHUNKS = 64


def _acc_type(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> str:
    """``tl.dot``'s input precision: TF32 for float32 only when torch allows it."""
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def _block(n: int, low: int = 16, high: int = 64) -> int:
    return max(low, min(high, triton.next_power_of_2(max(n, 1))))


@triton.jit
def _gather_rows(src_t, s_sn, indptr, cols, vals, row0, rm, mmask, rc, cmask,
                 BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr):
    """z[m, c] = Σ_{e in row row0 + rm[m]} v_e src_t[cols_e, rc[c]] (one basis function)."""
    start = tl.load(indptr + row0 + rm, mask=mmask, other=0)
    length = tl.load(indptr + row0 + rm + 1, mask=mmask, other=0) - start
    z = tl.zeros((BLOCK_M, BLOCK_C), dtype=ACC)
    for s in range(tl.max(length, axis=0)):
        emask = mmask & (s < length)
        j = tl.load(cols + start + s, mask=emask, other=0).to(tl.int64)
        v = tl.load(vals + start + s, mask=emask, other=0.0).to(ACC)
        xv = tl.load(src_t + j[:, None] * s_sn + rc[None, :],
                     mask=emask[:, None] & cmask[None, :], other=0.0)
        z += v[:, None] * xv.to(ACC)
    return z


@triton.jit
def _conv_kernel(src, w, out, indptr, cols, vals, dst, n_rows, C, O, K,
                 s_sb, s_sn, s_ob, s_on,
                 BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
                 ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid_m, t, pid_o = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < n_rows
    ro = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
    omask = ro < O
    acc = tl.zeros((BLOCK_M, BLOCK_O), dtype=ACC)
    src_t = src + t * s_sb
    for b in range(K):
        for c0 in range(0, C, BLOCK_C):
            rc = c0 + tl.arange(0, BLOCK_C)
            cmask = rc < C
            z = _gather_rows(src_t, s_sn, indptr, cols, vals, b * n_rows, rm, mmask, rc, cmask,
                             BLOCK_M, BLOCK_C, ACC)
            wb = tl.load(w + (b * C + rc[:, None]) * O + ro[None, :],
                         mask=cmask[:, None] & omask[None, :], other=0.0)
            acc += tl.dot(z.to(wb.dtype), wb, input_precision=PRECISION, out_dtype=ACC)
    rows = tl.load(dst + rm, mask=mmask, other=0).to(tl.int64)
    tl.store(out + t * s_ob + rows[:, None] * s_on + ro[None, :],
             acc.to(out.dtype.element_ty), mask=mmask[:, None] & omask[None, :])


def gather_conv(src: torch.Tensor, weight: torch.Tensor, values: torch.Tensor,
                structure: dict[str, torch.Tensor], n_dst: int) -> torch.Tensor:
    """``out[t, dst[r]] = Σ_b (Σ_{e in row (b, r)} v_e src[t, cols_e]) W_b``.

    Args:
        src: ``(B, N_src, C)`` contiguous values.
        weight: ``(K, C, O)`` contiguous coefficients.
        values: the entries' values, in the structure's order.
        structure: ``indptr`` (``K * n_dst + 1``), ``cols``, ``dst``.
        n_dst: destination points.
    """
    batch, _, c = src.shape
    k, _, o = weight.shape
    out = src.new_empty(batch, n_dst, o)  # every destination row is written (dst covers all)
    if batch == 0 or n_dst == 0:
        return out
    bm, bc, bo = 32, _block(c), _block(o)
    grid = (triton.cdiv(n_dst, bm), batch, triton.cdiv(o, bo))
    _conv_kernel[grid](src, weight, out, structure["indptr"], structure["cols"], values,
                       structure["dst"], n_dst, c, o, k, src.stride(0), src.stride(1),
                       out.stride(0), out.stride(1), BLOCK_M=bm, BLOCK_C=bc, BLOCK_O=bo,
                       ACC=_acc_type(src.dtype), PRECISION=_precision(src.dtype))
    return out


@triton.jit
def _weight_grad_kernel(src, g, part, indptr, cols, vals, dst, n_rows, rows_per_prog, B, C, O,
                        s_sb, s_sn, s_gb, s_gn,
                        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr):
    chunk, b, pid_co = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    n_ob = tl.cdiv(O, BLOCK_O)
    rc = (pid_co // n_ob) * BLOCK_C + tl.arange(0, BLOCK_C)
    ro = (pid_co % n_ob) * BLOCK_O + tl.arange(0, BLOCK_O)
    cmask, omask = rc < C, ro < O
    acc = tl.zeros((BLOCK_C, BLOCK_O), dtype=ACC)
    first = chunk * rows_per_prog
    last = tl.minimum(first + rows_per_prog, n_rows)
    for m0 in range(first, last, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        mmask = rm < last
        rows = tl.load(dst + rm, mask=mmask, other=0).to(tl.int64)
        for t in range(B):
            z = _gather_rows(src + t * s_sb, s_sn, indptr, cols, vals,
                             b * n_rows, rm, mmask, rc, cmask, BLOCK_M, BLOCK_C, ACC)
            gt = tl.load(g + t * s_gb + rows[:, None] * s_gn + ro[None, :],
                         mask=mmask[:, None] & omask[None, :], other=0.0)
            acc += tl.dot(tl.trans(z).to(gt.dtype), gt, input_precision=PRECISION,
                          out_dtype=ACC)
    base = part + (chunk * tl.num_programs(1) + b) * C * O
    tl.store(base + rc[:, None] * O + ro[None, :], acc,
             mask=cmask[:, None] & omask[None, :])


def gather_conv_weight_grad(src: torch.Tensor, grad_out: torch.Tensor, values: torch.Tensor,
                            structure: dict[str, torch.Tensor], n_basis: int) -> torch.Tensor:
    """``∂W_b = Σ_t Σ_r z_b[t, r]ᵀ grad_out[t, dst[r]]`` as ``(K, C, O)`` (the forward's
    structure); partial sums per chunk of destinations, added in a fixed order."""
    batch, _, c = src.shape
    n_rows, o = len(structure["dst"]), grad_out.shape[2]
    acc_dtype = torch.float64 if src.dtype == torch.float64 else torch.float32
    bm, bc, bo = 32, _block(c), _block(o)
    rows_per_prog = bm * triton.cdiv(triton.cdiv(max(n_rows, 1), WEIGHT_GRAD_CHUNKS), bm)
    chunks = triton.cdiv(max(n_rows, 1), rows_per_prog)
    part = torch.zeros(chunks, n_basis, c, o, device=src.device, dtype=acc_dtype)
    if batch and n_rows:
        grid = (chunks, n_basis, triton.cdiv(c, bc) * triton.cdiv(o, bo))
        _weight_grad_kernel[grid](src, grad_out, part, structure["indptr"], structure["cols"],
                                  values, structure["dst"], n_rows, rows_per_prog, batch, c, o,
                                  src.stride(0), src.stride(1), grad_out.stride(0),
                                  grad_out.stride(1), BLOCK_M=bm, BLOCK_C=bc, BLOCK_O=bo,
                                  ACC=_acc_type(src.dtype), PRECISION=_precision(src.dtype))
    return part.sum(0).to(src.dtype)


@triton.jit
def _values_grad_kernel(src, g, w, gv, indptr, cols, dst, n_rows, B, C, O,
                        s_sb, s_sn, s_gb, s_gn,
                        BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr,
                        ACC: tl.constexpr, PRECISION: tl.constexpr):
    pid_m, b = tl.program_id(0), tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mmask = rm < n_rows
    rows = tl.load(dst + rm, mask=mmask, other=0).to(tl.int64)
    start = tl.load(indptr + b * n_rows + rm, mask=mmask, other=0)
    length = tl.load(indptr + b * n_rows + rm + 1, mask=mmask, other=0) - start
    longest = tl.max(length, axis=0)
    for t in range(B):
        for c0 in range(0, C, BLOCK_C):
            rc = c0 + tl.arange(0, BLOCK_C)
            cmask = rc < C
            dz = tl.zeros((BLOCK_M, BLOCK_C), dtype=ACC)  # (g_t W_bᵀ) on this block
            for o0 in range(0, O, BLOCK_O):
                ro = o0 + tl.arange(0, BLOCK_O)
                omask = ro < O
                gt = tl.load(g + t * s_gb + rows[:, None] * s_gn + ro[None, :],
                             mask=mmask[:, None] & omask[None, :], other=0.0)
                wt = tl.load(w + (b * C + rc[None, :]) * O + ro[:, None],
                             mask=omask[:, None] & cmask[None, :], other=0.0)
                dz += tl.dot(gt, wt.to(gt.dtype), input_precision=PRECISION, out_dtype=ACC)
            for s in range(longest):
                emask = mmask & (s < length)
                j = tl.load(cols + start + s, mask=emask, other=0).to(tl.int64)
                xv = tl.load(src + t * s_sb + j[:, None] * s_sn + rc[None, :],
                             mask=emask[:, None] & cmask[None, :], other=0.0)
                here = tl.load(gv + start + s, mask=emask, other=0.0)
                tl.store(gv + start + s, here + tl.sum(dz * xv.to(ACC), axis=1), mask=emask)


def gather_conv_values_grad(src: torch.Tensor, grad_out: torch.Tensor, weight: torch.Tensor,
                            structure: dict[str, torch.Tensor], nnz: int) -> torch.Tensor:
    """``∂v_e = Σ_t (grad_out[t, dst[r]] W_bᵀ) · src[t, cols_e]`` for every entry e of row
    (b, r) of the forward's structure, in that structure's entry order."""
    batch, _, c = src.shape
    k, _, o = weight.shape
    n_rows = len(structure["dst"])
    acc_dtype = torch.float64 if src.dtype == torch.float64 else torch.float32
    out = torch.zeros(nnz, device=src.device, dtype=acc_dtype)
    if batch and n_rows:
        bm, bc, bo = 32, _block(c), _block(o)
        _values_grad_kernel[(triton.cdiv(n_rows, bm), k)](
            src, grad_out, weight, out, structure["indptr"], structure["cols"],
            structure["dst"], n_rows, batch, c, o, src.stride(0), src.stride(1),
            grad_out.stride(0), grad_out.stride(1), BLOCK_M=bm, BLOCK_C=bc, BLOCK_O=bo,
            ACC=_acc_type(src.dtype), PRECISION=_precision(src.dtype))
    return out


def compile_for(arch: int = 90) -> list[str]:
    """Compile every kernel ahead of time for CUDA compute capability ``arch`` (90: H100 /
    H200) in float32, bfloat16 and float64 — no GPU needed (Triton ships ptxas). Returns
    one line per kernel; a kernel that does not compile raises. Not under the interpreter.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    strides = ["i32"] * 4
    lines = []
    for name, acc in (("fp32", tl.float32), ("bf16", tl.float32), ("fp64", tl.float64)):
        ptr, vals = f"*{name}", "*fp32" if name == "bf16" else f"*{name}"
        sums = "*fp64" if name == "fp64" else "*fp32"
        index = ["*i64", "*i32"]
        kernels = {
            _conv_kernel: [ptr, ptr, ptr, *index, vals, "*i32", "i32", "i32", "i32", "i32",
                           *strides],
            _weight_grad_kernel: [ptr, ptr, sums, *index, vals, "*i32", *["i32"] * 5,
                                  *strides],
            _values_grad_kernel: [ptr, ptr, ptr, sums, *index, "*i32", *["i32"] * 4,
                                  *strides],
        }
        constexprs = {"BLOCK_M": 32, "BLOCK_C": 64, "BLOCK_O": 64, "ACC": acc,
                      "PRECISION": "tf32" if name == "fp32" else "ieee"}
        for kernel, types in kernels.items():
            names = list(kernel.arg_names)
            signature = dict(zip(names[:len(types)], types, strict=True))
            signature.update(dict.fromkeys(constexprs, "constexpr"))
            compiled = triton.compile(ASTSource(kernel, signature, constexprs),
                                      target=GPUTarget("cuda", arch, 32))
            lines.append(f"{kernel.fn.__name__} {name}: sm_{arch} cubin "
                         f"{len(compiled.asm['cubin']):,} bytes, "
                         f"{compiled.metadata.shared:,} bytes shared memory")
    return lines

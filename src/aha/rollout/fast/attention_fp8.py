"""Decode attention over an fp8 (e4m3) paged KV cache as a CUDA kernel (compiled at run time, aha._cuda).

Why not Triton: its fp8 kernel (attention.py) is as slow as bf16 though it reads half the bytes. Compiled for the
H200, each e4m3 value is converted on its own and V reaches the tensor cores byte by byte from shared memory
(docs/results/scale_h200/s9). Here every lane loads whole 16-byte runs of K and V from global memory straight
into the registers the MMA wants, converts two values per instruction (cvt.rn.f16x2.e4m3x2) and never stages
them in shared memory.

One block per (sequence, KV head, split); its warps take the split's 16-key tiles in turn and are merged at the
end (log-sum-exp, through shared memory). With 8-warp blocks where their shared memory allows (pipeline_for: an
H100/H200), each warp's tiles come through a ring in shared memory that cp.async fills a step ahead (STAGES =
2), every lane copying and reading back the same bytes it would load, and from PAIR_FROM tiles a warp on a step
is two tiles (32 keys: one softmax update, four independent Q K^T chains) for which the ring frees the
registers. Neither the ring alone nor a deeper one (stages 2-5) is faster than loading into registers a tile
ahead: the kernel is not waiting on memory there (docs/results/scale_h200/s13); the two-tile step gains 3-9%
from 2,176 tokens up. Elsewhere (Ada, 4-warp blocks) the register double buffer runs. With PDL, the first tiles are
requested before waiting for the previous kernel (RoPE) unless one of them holds position L - 1, which RoPE writes
(EARLY_LOADS; pdl_wait in SOURCE). Per tile, with mma.m16n8k16 (fp16 in, fp32 accumulate), in the transposed
layout (TR, wherever a KV head has at most 8 query heads: every Qwen2.5 size):
    S^T (16 keys x 8 columns: the G heads of the KV head, zero-padded) = K Q^T
        Q is prescaled by scale * log2(e) and rounded to fp16 once; the head dimension is permuted (the same way
        in Q and K, which leaves every dot product unchanged) so that each lane's K values for all k-steps are
        one contiguous run of D/4 bytes.
    s = S * k_scale[key]; online softmax in base 2 (running max m, sum l per head: a column, over 8 lanes)
    O^T += V^T (p * v_scale[key] / R)^T, with R the tile's largest v_scale (p * v_scale alone can underflow fp16);
        movmatrix transposes this lane's P' values into the B operand; the head dims are permuted so that each
        lane's V values are one run of D/8 bytes per key, and byte permutes (prmt) pair two keys' bytes for the
        conversion; O is kept in units of R.
The 16-row layout (G up to 16) puts the heads on M (S = Q K^T, O += P' V): for G <= 8 it pads them to 16 rows,
twice the MMAs, exponentials and accumulator registers (177 registers a thread against 128). At 64 rows x 2,176
tokens, 1.5B shapes, the transposed layout is 1.06x faster, 1.09x with the early loads (docs/results/scale_h200/s16).
With splits > 1 the blocks write (o, lse) partials, merged by the last block of a (sequence, KV head) to finish
(an atomic counter, left zero) or by attention._merge_kernel.
Limits (else the Triton kernel runs): head dim 64 or 128, G <= 16 query heads per KV head, pages a multiple of
16 tokens, an sm_89+ GPU (e4m3 conversions), the model in bf16 or fp16.
"""

from __future__ import annotations

import math

import torch

from ... import _cuda, _triton

SOURCE = r"""
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define KB (D / 4)
#define VB (D / 8)
#define STEPS (D / 16)
#define VW (VB / 4)
#if TR  // transposed: S^T = K Q^T and O^T += V^T P^T (keys and head dims on M, the G <= 8 heads on N)
#define NACC (D / 16)
#define QW 2
#define NS 2
#define SKEY(i) (g + 8 * (i))
#define RI(e) ((e) & 1)
#else
#define NACC (D / 8)
#define QW 4
#define NS 4
#define SKEY(i) (2 * t + ((i) & 1) + ((i) >> 1) * 8)
#define RI(e) ((e) >> 1)
#endif
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ u32 f8x2(u32 x) {
  u32 r; u16 h = (u16)x;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(r) : "h"(h));
  return r;
}
__device__ __forceinline__ u32 pack(float lo, float hi) {
  u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ float ex2(float x) {
  float r; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float lg2(float x) {
  float r; asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
  u32 r; asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}
__device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float to_f32(u16 x) {
#if BF16
  return __uint_as_float(((u32)x) << 16);
#else
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
#endif
}
__device__ __forceinline__ u16 from_f32(float x) {
  u16 r;
#if BF16
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
#else
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
#endif
  return r;
}
__device__ __forceinline__ float row_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
// the max over the 8 lanes of one t (a column of an MMA fragment)
__device__ __forceinline__ float col_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 4));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 8));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 16));
}
__device__ __forceinline__ u32 transpose8(u32 x) {  // an 8x8 b16 matrix held one row pair a lane, transposed
  u32 r; asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(x));
  return r;
}

// PDL: wait for the previous kernel (RoPE, which writes Q and each sequence's newest key and value at position
// L - 1), then let the next one launch. With EARLY, the first tiles are requested before the wait when none of
// them holds position L - 1: their loads overlap the previous kernel's tail (everything before it has finished:
// every kernel here waits before it lets the next launch). What the previous kernel writes (Q, the caches and
// their scales) is read through pointers without __restrict__: the compiler may move loads of const __restrict__
// data (invariant) above the wait, which a GPU test caught (Q read before RoPE had written it), and Q's loads are
// volatile, so they stay after the (volatile) wait.
__device__ __forceinline__ void pdl_wait() {
#if PDL
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ u16 load_u16(const u16* p) {
  u16 r; asm volatile("ld.global.u16 %0, [%1];" : "=h"(r) : "l"(p));
  return r;
}

// Q as the MMA's A operand: rows g and g+8, the permuted head dims t*KB + 4s + {0,1} and {2,3}; transposed, Q^T
// as the B operand: column g, the same dims (qa[s][0], qa[s][1] of row g). qh: the KV head's first query row.
__device__ __forceinline__ void load_q(u32 (&qa)[STEPS][QW], const u16* qh, int sqh, float qscale, int g, int t) {
#pragma unroll
  for (int s = 0; s < STEPS; s++) {
#pragma unroll
    for (int r = 0; r < QW / 2; r++) {
      const int row = g + 8 * r;
      float x[4] = {0.f, 0.f, 0.f, 0.f};
      if (row < G) {
        const u16* qp = qh + (long long)row * sqh + t * KB + 4 * s;
#pragma unroll
        for (int i = 0; i < 4; i++) x[i] = to_f32(load_u16(qp + i)) * qscale;
      }
      qa[s][r] = pack(x[0], x[1]);
      qa[s][QW / 2 + r] = pack(x[2], x[3]);
    }
  }
}

// One tile's raw bytes and scales, as this lane holds them.
struct Tile {
  uint4 k[2][KB / 16];  // keys u*8 + g (u = 0, 1): bytes [t*KB, t*KB + KB) of the head
  u32 v[4][VW];         // keys 2t, 2t+1, 2t+8, 2t+9: bytes [g*VB, g*VB + VB)
  float ks[NS], vs[NS];  // scales of keys SKEY(i): 2t, 2t+1, 2t+8, 2t+9 (transposed: g, g+8)
  int n0;
};

__device__ __forceinline__ void load_tile(Tile& T, int n0, const int* bt, const u8* KC, const u8* VC,
                                          const float* KS, const float* VS, long long skt, long long head,
                                          long long sst, int kh, int g, int t) {
  long long slot0 = (long long)bt[n0 / PAGE] * PAGE + n0 % PAGE;
  T.n0 = n0;
#pragma unroll
  for (int u = 0; u < 2; u++) {
    const uint4* p = (const uint4*)(KC + (slot0 + u * 8 + g) * skt + head + t * KB);
#pragma unroll
    for (int i = 0; i < KB / 16; i++) T.k[u][i] = p[i];
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    long long s = slot0 + 2 * t + (i & 1) + (i >> 1) * 8;
    const u8* p = VC + s * skt + head + g * VB;
#if VW == 4
    uint4 w = *(const uint4*)p;
    T.v[i][0] = w.x; T.v[i][1] = w.y; T.v[i][2] = w.z; T.v[i][3] = w.w;
#else
    uint2 w = *(const uint2*)p;
    T.v[i][0] = w.x; T.v[i][1] = w.y;
#endif
  }
#pragma unroll
  for (int i = 0; i < NS; i++) {
    const long long s = slot0 + SKEY(i);
    T.ks[i] = KS[s * sst + kh];
    T.vs[i] = VS[s * sst + kh];
  }
}

// The online softmax's state after a step: l = l * alpha + sum, and O rescaled by its row's (transposed: its
// column's) alpha and by the change of its unit R to the step's largest v_scale, vmax. Returns 1 / R, or 0 when
// every key of the step is masked (R stays).
__device__ __forceinline__ float advance(float vmax, float& R, const float (&alpha)[2], const float (&sum)[2],
                                         float (&l)[2], float (&acc)[NACC][4]) {
  float ratio = 1.f, inv = 0.f;
  if (vmax > 0.f) {
    ratio = R / vmax;
    inv = 1.f / vmax;
    R = vmax;
  }
#pragma unroll
  for (int r = 0; r < 2; r++) l[r] = l[r] * alpha[r] + sum[r];
  const float f[2] = {alpha[0] * ratio, alpha[1] * ratio};
#pragma unroll
  for (int j = 0; j < NACC; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] *= f[RI(e)];
  return inv;
}

#if TR
// The transposed math of N tiles (module docstring): S^T (16 keys x 8 heads) = K Q^T, the online softmax per
// head (a column: reduced over the 8 lanes of one t), O^T (16 head dims x 8 heads per m-tile) += V^T P'^T, where
// movmatrix turns this lane's P' values (keys g, g+8; heads 2t, 2t+1) into the B operand (keys 2t, 2t+1, 2t+8,
// 2t+9; head g). Half the MMAs, exponentials and accumulator registers of the 16-row layout for G <= 8.
template <int N>
__device__ __forceinline__ void tile_math(Tile (&T)[N], int end, const u32 (&qb)[STEPS][QW], float (&acc)[NACC][4],
                                          float (&m)[2], float (&l)[2], float& R, int g, int t) {
  bool ok[N][2];
  float vmax = 0.f;
#pragma unroll
  for (int n = 0; n < N; n++) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      ok[n][i] = T[n].n0 + SKEY(i) < end;
      if (!ok[n][i]) T[n].vs[i] = 0.f;  // p is 0 there: the scale must be finite (a stale or unwritten ring slot)
      vmax = fmaxf(vmax, T[n].vs[i]);
    }
#pragma unroll
    for (int i = 0; i < 4; i++)  // this lane's V rows (keys 2t, 2t+1, 2t+8, 2t+9) past the end: finite zeros
      if (T[n].n0 + 2 * t + (i & 1) + (i >> 1) * 8 >= end)
#pragma unroll
        for (int w = 0; w < VW; w++) T[n].v[i][w] = 0u;
  }
  // S^T = K Q^T: rows keys g (c0, c1) and g+8 (c2, c3), columns heads 2t, 2t+1; two chains (even, odd k-steps)
  float c[N][2][4];
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int h = 0; h < 2; h++) c[n][h][0] = c[n][h][1] = c[n][h][2] = c[n][h][3] = 0.f;
#pragma unroll
  for (int s = 0; s < STEPS; s++)
#pragma unroll
    for (int n = 0; n < N; n++) {
      const uint4 k0 = T[n].k[0][s / 4], k1 = T[n].k[1][s / 4];
      const u32 w0 = (s % 4 == 0) ? k0.x : (s % 4 == 1) ? k0.y : (s % 4 == 2) ? k0.z : k0.w;
      const u32 w1 = (s % 4 == 0) ? k1.x : (s % 4 == 1) ? k1.y : (s % 4 == 2) ? k1.z : k1.w;
      const u32 a[4] = {f8x2(w0), f8x2(w1), f8x2(w0 >> 16), f8x2(w1 >> 16)};
      mma(c[n][s & 1], a, qb[s][0], qb[s][1]);
    }
  float p[N][4], mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      p[n][e] = ok[n][e >> 1] ? (c[n][0][e] + c[n][1][e]) * T[n].ks[e >> 1] : NEG_INF;
      mx[e & 1] = fmaxf(mx[e & 1], p[n][e]);
    }
  float alpha[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const float mn = fmaxf(m[r], col_max(mx[r]));
    const float ms = mn == NEG_INF ? 0.f : mn;
    alpha[r] = ex2(m[r] - ms);
    m[r] = mn;
    mx[r] = ms;
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      p[n][e] = ex2(p[n][e] - mx[e & 1]);
      sum[e & 1] += p[n][e];
    }
  const float inv = advance(col_max(vmax), R, alpha, sum, l, acc);
#pragma unroll
  for (int n = 0; n < N; n++) {
    const Tile& cur = T[n];
    // P'^T as the B operand: b0 keys 2t, 2t+1 and b1 keys 2t+8, 2t+9, of head g
    const float s0 = cur.vs[0] * inv, s1 = cur.vs[1] * inv;
    const u32 b0 = transpose8(pack(p[n][0] * s0, p[n][1] * s0));
    const u32 b1 = transpose8(pack(p[n][2] * s1, p[n][3] * s1));
    // O^T += V^T P'^T: m-tile j, rows g and g+8 <-> head dims g*VB + 2j and + 1 (this lane's V bytes)
#pragma unroll
    for (int w = 0; w < VW; w++) {
      const u32 lo01 = prmt(cur.v[0][w], cur.v[1][w], 0x5140), hi01 = prmt(cur.v[0][w], cur.v[1][w], 0x7362);
      const u32 lo89 = prmt(cur.v[2][w], cur.v[3][w], 0x5140), hi89 = prmt(cur.v[2][w], cur.v[3][w], 0x7362);
      const u32 a0[4] = {f8x2(lo01), f8x2(lo01 >> 16), f8x2(lo89), f8x2(lo89 >> 16)};
      const u32 a1[4] = {f8x2(hi01), f8x2(hi01 >> 16), f8x2(hi89), f8x2(hi89 >> 16)};
      mma(acc[2 * w], a0, b0, b1);
      mma(acc[2 * w + 1], a1, b0, b1);
    }
  }
}
#else
// The math of N tiles (16 keys each) with one softmax update: S = Q K^T, the online softmax, O += P' V (module
// docstring). A tile wholly past the end (the odd tile of a pair) is masked like the tail of the last one.
template <int N>
__device__ __forceinline__ void tile_math(Tile (&T)[N], int end, const u32 (&qa)[STEPS][QW], float (&acc)[NACC][4],
                                          float (&m)[2], float (&l)[2], float& R, int g, int t) {
  bool ok[N][4];
  float vmax = 0.f;
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int i = 0; i < 4; i++) {
      ok[n][i] = T[n].n0 + 2 * t + (i & 1) + (i >> 1) * 8 < end;
      if (!ok[n][i]) {
        T[n].vs[i] = 0.f;  // p is 0 there: the scale and bytes must be finite (a stale or unwritten ring slot)
#pragma unroll
        for (int w = 0; w < VW; w++) T[n].v[i][w] = 0u;
      }
      vmax = fmaxf(vmax, T[n].vs[i]);
    }
  // S = Q K^T: sub-tile u holds keys u*8 + (0..7); this lane's columns are keys u*8 + 2t, u*8 + 2t + 1
  float c[N][2][4];
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int u = 0; u < 2; u++) c[n][u][0] = c[n][u][1] = c[n][u][2] = c[n][u][3] = 0.f;
#pragma unroll
  for (int s = 0; s < STEPS; s++)  // the 2N accumulation chains interleaved
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
      for (int u = 0; u < 2; u++) {
        const uint4 q4 = T[n].k[u][s / 4];
        const u32 w = (s % 4 == 0) ? q4.x : (s % 4 == 1) ? q4.y : (s % 4 == 2) ? q4.z : q4.w;
        mma(c[n][u], qa[s], f8x2(w), f8x2(w >> 16));
      }
  float p[N][2][4], mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int u = 0; u < 2; u++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int i = u * 2 + (e & 1);
        p[n][u][e] = ok[n][i] ? c[n][u][e] * T[n].ks[i] : NEG_INF;
        mx[e >> 1] = fmaxf(mx[e >> 1], p[n][u][e]);
      }
  float alpha[2];
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const float mn = fmaxf(m[r], row_max(mx[r]));
    const float ms = mn == NEG_INF ? 0.f : mn;
    alpha[r] = ex2(m[r] - ms);
    m[r] = mn;
    mx[r] = ms;
  }
  float sum[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < N; n++)
#pragma unroll
    for (int u = 0; u < 2; u++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        p[n][u][e] = ex2(p[n][u][e] - mx[e >> 1]);
        sum[e >> 1] += p[n][u][e];
      }
  const float inv = advance(row_max(vmax), R, alpha, sum, l, acc);
#pragma unroll
  for (int n = 0; n < N; n++) {
    const Tile& cur = T[n];
    // P' = p * v_scale / R as the A operand: rows g, g+8; keys 2t, 2t+1 (a0, a1) and 2t+8, 2t+9 (a2, a3)
    u32 pa[4];
    pa[0] = pack(p[n][0][0] * cur.vs[0] * inv, p[n][0][1] * cur.vs[1] * inv);
    pa[1] = pack(p[n][0][2] * cur.vs[0] * inv, p[n][0][3] * cur.vs[1] * inv);
    pa[2] = pack(p[n][1][0] * cur.vs[2] * inv, p[n][1][1] * cur.vs[3] * inv);
    pa[3] = pack(p[n][1][2] * cur.vs[2] * inv, p[n][1][3] * cur.vs[3] * inv);
    // O += P' V: n-tile j, column n <-> head dim n * VB + j; this lane's V bytes are dims g*VB + (0..VB-1)
#pragma unroll
    for (int w = 0; w < VW; w++) {
      const u32 lo01 = prmt(cur.v[0][w], cur.v[1][w], 0x5140), hi01 = prmt(cur.v[0][w], cur.v[1][w], 0x7362);
      const u32 lo89 = prmt(cur.v[2][w], cur.v[3][w], 0x5140), hi89 = prmt(cur.v[2][w], cur.v[3][w], 0x7362);
      mma(acc[4 * w + 0], pa, f8x2(lo01), f8x2(lo89));
      mma(acc[4 * w + 1], pa, f8x2(lo01 >> 16), f8x2(lo89 >> 16));
      mma(acc[4 * w + 2], pa, f8x2(hi01), f8x2(hi89));
      mma(acc[4 * w + 3], pa, f8x2(hi01 >> 16), f8x2(hi89 >> 16));
    }
  }
}
#endif

#if STAGES
// The shared-memory ring (STAGES > 0): per warp and stage, this lane's K chunks [c][lane] (16 bytes each), its V
// runs [i][lane] (VB bytes each) and the tile's 16 K and 16 V scales (one copied by each lane), so that every
// lane reads back exactly the bytes it copied (the scales after a __syncwarp) without bank conflicts.
#define NKC (2 * (KB / 16))
#define V_OFF (NKC * 512)
#define S_OFF (V_OFF + 128 * VB)
#define STAGE_BYTES (S_OFF + 128)

__device__ __forceinline__ void cp_async(void* dst, const void* src, int bytes) {
  const u32 d = (u32)__cvta_generic_to_shared(dst);
  // .ca (through L1): a warp's K copy covers half of each 32-byte sector, its next copy the other half
  if (bytes == 16) asm volatile("cp.async.ca.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src));
  else if (bytes == 8) asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(d), "l"(src));
  else asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

// load_tile's bytes, copied into a stage
__device__ __forceinline__ void copy_tile(unsigned char* st, int n0, const int* bt, const u8* KC, const u8* VC,
                                          const float* KS, const float* VS, long long skt, long long head,
                                          long long sst, int kh, int lane, int g, int t) {
  const long long slot0 = (long long)bt[n0 / PAGE] * PAGE + n0 % PAGE;
#pragma unroll
  for (int u = 0; u < 2; u++)
#pragma unroll
    for (int i = 0; i < KB / 16; i++)
      cp_async(st + ((u * (KB / 16) + i) * 32 + lane) * 16,
               KC + (slot0 + u * 8 + g) * skt + head + t * KB + i * 16, 16);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const long long s = slot0 + 2 * t + (i & 1) + (i >> 1) * 8;
    cp_async(st + V_OFF + (i * 32 + lane) * VB, VC + s * skt + head + g * VB, VB);
  }
  const long long s = slot0 + (lane & 15);
  cp_async(st + S_OFF + lane * 4, (lane < 16 ? KS : VS) + s * sst + kh, 4);
}

__device__ __forceinline__ void read_tile(Tile& T, const unsigned char* st, int n0, int lane, int g, int t) {
  T.n0 = n0;
#pragma unroll
  for (int u = 0; u < 2; u++)
#pragma unroll
    for (int i = 0; i < KB / 16; i++) T.k[u][i] = *(const uint4*)(st + ((u * (KB / 16) + i) * 32 + lane) * 16);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const unsigned char* p = st + V_OFF + (i * 32 + lane) * VB;
#if VW == 4
    const uint4 w = *(const uint4*)p;
    T.v[i][0] = w.x; T.v[i][1] = w.y; T.v[i][2] = w.z; T.v[i][3] = w.w;
#else
    const uint2 w = *(const uint2*)p;
    T.v[i][0] = w.x; T.v[i][1] = w.y;
#endif
  }
#pragma unroll
  for (int i = 0; i < NS; i++) {
    T.ks[i] = ((const float*)(st + S_OFF))[SKEY(i)];
    T.vs[i] = ((const float*)(st + S_OFF))[16 + SKEY(i)];
  }
}
#endif

#if STAGES
// The ring's loop (STAGES > 0): STAGES steps of N tiles in flight per warp, filled by cp.async STAGES - 1 steps
// ahead of the math; a step is this warp's tiles tile, tile + WARPS, ..., tile + (N - 1) * WARPS.
template <int N>
__device__ __forceinline__ void ring_loop(unsigned char* ring, int warp, int n_tiles, int start, int end, int L,
                                          const int* bt, const u8* KC, const u8* VC, const float* KS,
                                          const float* VS, long long skt, long long head, long long sst, int kh,
                                          int lane, int g, int t, const u16* qh, int sqh, float qscale,
                                          float (&acc)[NACC][4], float (&m)[2], float (&l)[2], float& R) {
  // the first STAGES - 1 steps (tiles below (STAGES - 1) * N * WARPS) go out before the wait unless the last
  // tile, which holds position L - 1 where end == L, is among them
  const bool early = EARLY && (end < L || n_tiles > (STAGES - 1) * N * WARPS);
  if (!early) pdl_wait();
  int next = warp;  // the first tile of the next step to copy
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
#pragma unroll
    for (int n = 0; n < N; n++)
      if (next + n * WARPS < n_tiles)
        copy_tile(ring + (s * N + n) * STAGE_BYTES, start + (next + n * WARPS) * 16, bt, KC, VC, KS, VS, skt, head,
                  sst, kh, lane, g, t);
    cp_commit();
    next += N * WARPS;
  }
  if (early) pdl_wait();
  u32 qa[STEPS][QW];
  load_q(qa, qh, sqh, qscale, g, t);
  int stage = 0;
  Tile cur[N];
  for (int tile = warp; tile < n_tiles; tile += N * WARPS) {
    __syncwarp();  // every lane is done reading the stage refilled now (the scales are shared by the lanes)
    const int fill = stage == 0 ? STAGES - 1 : stage - 1;
#pragma unroll
    for (int n = 0; n < N; n++)
      if (next + n * WARPS < n_tiles)
        copy_tile(ring + (fill * N + n) * STAGE_BYTES, start + (next + n * WARPS) * 16, bt, KC, VC, KS, VS, skt,
                  head, sst, kh, lane, g, t);
    cp_commit();
    next += N * WARPS;
    cp_wait<STAGES - 1>();  // this lane's copies of the current step have landed
    __syncwarp();           // and every lane's (the scales)
#pragma unroll
    for (int n = 0; n < N; n++)
      read_tile(cur[n], ring + (stage * N + n) * STAGE_BYTES, start + (tile + n * WARPS) * 16, lane, g, t);
    stage = stage + 1 == STAGES ? 0 : stage + 1;
    tile_math<N>(cur, end, qa, acc, m, l, R, g, t);
  }
}
#endif

extern "C" __global__ void __launch_bounds__(WARPS * 32)
aha_decode_fp8(const u16* Q, const u8* KC, const u8* VC, const float* KS, const float* VS,
               const int* __restrict__ BT, const int* __restrict__ LENS, u16* __restrict__ O, float* __restrict__ MO,
               float* __restrict__ ML, int* __restrict__ CNT, float qscale, int sqb, int sqh, int skt_,
               int skh, int sst_, int sbt, int sob, int soh) {
  // launched with PDL while the previous kernel finishes: nothing it writes is read before pdl_wait()
  const int b = blockIdx.x, kh = blockIdx.y, sp = blockIdx.z;
  const int KVH = gridDim.y, SPLITS = gridDim.z, NH = KVH * G;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const long long skt = skt_, sst = sst_, head = (long long)kh * skh;
  const int L = LENS[b];
  const int per = ((L + SPLITS - 1) / SPLITS + 15) / 16 * 16;
  const int start = sp * per;
  const int end = min(start + per, L);
  const int n_tiles = end > start ? (end - start + 15) / 16 : 0;
  const int* bt = BT + (long long)b * sbt;

  const u16* qh = Q + (long long)b * sqb + (long long)kh * G * sqh;

  float acc[NACC][4];
#pragma unroll
  for (int j = 0; j < NACC; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f}, R = 0.f;

#if STAGES
  extern __shared__ __align__(16) unsigned char ring_all[];
  unsigned char* ring = ring_all + (long long)warp * STAGES * TILES * STAGE_BYTES;
#if TILES > 1
  if (n_tiles >= PAIR_FROM * WARPS)  // two tiles a step from a long enough context (shorter: one, faster there)
    ring_loop<2>(ring, warp, n_tiles, start, end, L, bt, KC, VC, KS, VS, skt, head, sst, kh, lane, g, t, qh, sqh,
                  qscale, acc, m, l, R);
  else
#endif
    ring_loop<1>(ring, warp, n_tiles, start, end, L, bt, KC, VC, KS, VS, skt, head, sst, kh, lane, g, t, qh, sqh,
                  qscale, acc, m, l, R);
#else
  Tile cur[1], nxt;
  const bool early = EARLY && (end < L || n_tiles > WARPS);  // no warp's first tile holds position L - 1
  if (!early) pdl_wait();
  if (warp < n_tiles) load_tile(cur[0], start + warp * 16, bt, KC, VC, KS, VS, skt, head, sst, kh, g, t);
  if (early) pdl_wait();
  u32 qa[STEPS][QW];
  load_q(qa, qh, sqh, qscale, g, t);
  for (int tile = warp; tile < n_tiles; tile += WARPS) {
    // the next tile's loads go out before this tile's math (8 warps: 30 vs 37 us without, s10)
    if (tile + WARPS < n_tiles)
      load_tile(nxt, start + (tile + WARPS) * 16, bt, KC, VC, KS, VS, skt, head, sst, kh, g, t);
    tile_math<1>(cur, end, qa, acc, m, l, R, g, t);
    cur[0] = nxt;
  }
#endif
#pragma unroll
  for (int r = 0; r < 2; r++) {  // the sums over a row's lanes (transposed: a column's)
#if TR
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 4);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 8);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 16);
#else
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
#endif
  }
#pragma unroll
  for (int j = 0; j < NACC; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] *= R;

  // merge the warps: halves write to shared memory, the lower halves add them in
#if WARPS > 1
#if STAGES  // the ring is free once every warp is past its loop (ring_bytes keeps it at least this big)
  cp_wait<0>();
  __syncthreads();
  float4* s_acc = (float4*)ring_all;
  float4* s_ml = s_acc + (WARPS / 2) * NACC * 32;
#else
  __shared__ float4 s_acc[(WARPS / 2) * NACC * 32];
  __shared__ float4 s_ml[(WARPS / 2) * 32];
#endif
#pragma unroll
  for (int half = WARPS / 2; half >= 1; half /= 2) {
    if (warp >= half && warp < 2 * half) {
      const int slot = warp - half;
#pragma unroll
      for (int j = 0; j < NACC; j++)
        s_acc[(slot * NACC + j) * 32 + lane] = make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]);
      s_ml[slot * 32 + lane] = make_float4(m[0], m[1], l[0], l[1]);
    }
    __syncthreads();
    if (warp < half) {
      const float4 o = s_ml[warp * 32 + lane];
      const float om[2] = {o.x, o.y}, ol[2] = {o.z, o.w};
      float fa[2], fb[2];
#pragma unroll
      for (int r = 0; r < 2; r++) {
        const float mn = fmaxf(m[r], om[r]);
        const float ms = mn == NEG_INF ? 0.f : mn;
        fa[r] = ex2(m[r] - ms);
        fb[r] = ex2(om[r] - ms);
        m[r] = mn;
        l[r] = l[r] * fa[r] + ol[r] * fb[r];
      }
#pragma unroll
      for (int j = 0; j < NACC; j++) {
        const float4 x = s_acc[(warp * NACC + j) * 32 + lane];
        acc[j][0] = acc[j][0] * fa[RI(0)] + x.x * fb[RI(0)];
        acc[j][1] = acc[j][1] * fa[RI(1)] + x.y * fb[RI(1)];
        acc[j][2] = acc[j][2] * fa[RI(2)] + x.z * fb[RI(2)];
        acc[j][3] = acc[j][3] * fa[RI(3)] + x.w * fb[RI(3)];
      }
    }
    __syncthreads();
  }
#endif

  if (warp == 0) {
#if TR
#pragma unroll
    for (int r = 0; r < 2; r++) {  // head 2t + r: dims g*VB + 2j (acc[j][r]) and + 1 (acc[j][2 + r])
      const int row = 2 * t + r;
      if (row >= G) continue;
      const long long hrow = (long long)b * NH + kh * G + row;
      const float il = l[r] > 0.f ? 1.f / l[r] : 0.f;
      if (SPLITS == 1) {
        u32* op = (u32*)(O + (long long)b * sob + (long long)(kh * G + row) * soh + g * VB);
#pragma unroll
        for (int j = 0; j < NACC; j++)
          op[j] = (u32)from_f32(acc[j][r] * il) | ((u32)from_f32(acc[j][2 + r] * il) << 16);
      } else {
        float2* mo = (float2*)(MO + (hrow * SPLITS + sp) * D + g * VB);
#pragma unroll
        for (int j = 0; j < NACC; j++) mo[j] = make_float2(acc[j][r] * il, acc[j][2 + r] * il);
        if (g == 0) ML[hrow * SPLITS + sp] = l[r] > 0.f ? (m[r] + lg2(l[r])) * 0.6931471805599453f : NEG_INF;
      }
    }
#else
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = g + 8 * r;
      if (row >= G) continue;
      const long long hrow = (long long)b * NH + kh * G + row;
      const float il = l[r] > 0.f ? 1.f / l[r] : 0.f;
      if (SPLITS == 1) {
        u16* op = O + (long long)b * sob + (long long)(kh * G + row) * soh;
#pragma unroll
        for (int j = 0; j < NACC; j++) {
          op[(2 * t) * VB + j] = from_f32(acc[j][2 * r] * il);
          op[(2 * t + 1) * VB + j] = from_f32(acc[j][2 * r + 1] * il);
        }
      } else {
        float* mo = MO + (hrow * SPLITS + sp) * D;
#pragma unroll
        for (int j = 0; j < NACC; j++) {
          mo[(2 * t) * VB + j] = acc[j][2 * r] * il;
          mo[(2 * t + 1) * VB + j] = acc[j][2 * r + 1] * il;
        }
        if (t == 0) ML[hrow * SPLITS + sp] = l[r] > 0.f ? (m[r] + lg2(l[r])) * 0.6931471805599453f : NEG_INF;
      }
    }
#endif
  }
  if (SPLITS == 1 || CNT == nullptr) return;
  // the last block of this (sequence, KV head) to finish merges the splits
  __shared__ int s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(CNT + b * KVH + kh, 1) == SPLITS - 1;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  // split weights per row once (shared memory), then every (row, dim) output sums the splits' partials
  __shared__ float s_w[G * 16];
  __shared__ float s_den[G];
  if (threadIdx.x < G) {
    const long long hrow = (long long)b * NH + kh * G + threadIdx.x;
    float mx = NEG_INF;
    for (int s = 0; s < SPLITS; s++) mx = fmaxf(mx, __ldcg(ML + hrow * SPLITS + s));
    const float ms = mx == NEG_INF ? 0.f : mx;
    float den = 0.f;
    for (int s = 0; s < SPLITS; s++) {
      const float w = __expf(__ldcg(ML + hrow * SPLITS + s) - ms);
      s_w[threadIdx.x * 16 + s] = w;
      den += w;
    }
    s_den[threadIdx.x] = den > 0.f ? 1.f / den : 0.f;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += WARPS * 32) {
    const int row = idx / D, d = idx % D;
    const float* mo = MO + ((long long)b * NH + kh * G + row) * SPLITS * D + d;
    float num = 0.f;
#pragma unroll 4
    for (int s = 0; s < SPLITS; s++) num += s_w[row * 16 + s] * __ldcg(mo + s * D);
    O[(long long)b * sob + (long long)(kh * G + row) * soh + d] = from_f32(num * s_den[row]);
  }
  if (threadIdx.x == 0) atomicExch(CNT + b * KVH + kh, 0);
}
"""

_failed: set = set()
LOG2E = 1.0 / math.log(2.0)
# The ring where it fits (pipeline_for): 2 steps in flight per warp, at most 2 tiles a step, 2 from 8 tiles a
# warp up (H200, 64 rows, s13/attn_switch.txt: 1.03x at 2,176 tokens, 1.09x at 16,384; 544: 0.99x)
STAGES, TILES, PAIR_FROM = 2, 2, 8
# The transposed layout (TR) wherever a KV head has at most 8 query heads (every Qwen2.5 size)
TRANSPOSED = True
# With PDL, the first tiles are requested before waiting for the previous kernel (pdl_wait in SOURCE)
EARLY_LOADS = True


def defines(
    G: int,
    D: int,
    page: int,
    dtype: torch.dtype,
    warps: int,
    stages: int = 0,
    tiles: int = 1,
    pdl: bool = False,
    transposed: bool = False,
    early: bool = True,
) -> dict:
    if transposed and G > 8:
        raise ValueError(f"the transposed layout holds at most 8 query heads a KV head, not {G}")
    return dict(
        G=G,
        D=D,
        PAGE=page,
        BF16=dtype == torch.bfloat16,
        WARPS=warps,
        STAGES=stages,
        TILES=tiles,
        PAIR_FROM=PAIR_FROM,
        PDL=pdl,
        TR=transposed,
        EARLY=pdl and early,
    )


def ring_bytes(D: int, warps: int, stages: int, tiles: int) -> int:
    """The dynamic shared memory of the cp.async ring: per warp, stage and tile, K and V (16 D bytes each) and
    the tile's 32 scales; at least the warps' merge (which reuses it)."""
    if not stages:
        return 0
    merge = (warps // 2) * 512 * (D // 8 + 1)
    return max(warps * stages * tiles * (32 * D + 128), merge)


def warps_for(blocks: int, num_sms: int) -> int:
    """8 warps a block (its registers fill a multiprocessor) while the blocks fit one a multiprocessor, else 4
    (two a multiprocessor). H200: 64 rows x 2 KV heads, 8 warps 30.2 us vs 4 warps 38.1 at 2,176 tokens; x 4 KV
    heads, 4 warps 48.3 vs 55.5 (docs/results/scale_h200/s10)."""
    return 8 if blocks <= num_sms else 4


def pipeline_for(D: int, warps: int, device) -> tuple[int, int]:
    """(stages, tiles): the cp.async ring (STAGES, TILES) for 8-warp blocks where its shared memory fits one on
    this GPU (an H100/H200 opts in to 227 KiB; the ring of 8 warps takes 132 KiB at D = 128), else the register
    double buffer (0, 1): on Ada's 99 KiB, and for 4-warp blocks (two a multiprocessor, e.g. 7B's 4 KV heads at
    64 rows), where the shipped ring was not timed."""
    if torch.device(device).type != "cuda" or warps != 8:
        return 0, 1
    props = torch.cuda.get_device_properties(device)
    limit = getattr(props, "shared_memory_per_block_optin", 0)
    # the static shared memory beside the ring: the fused merge's weights and flags (< 2 KiB)
    return (STAGES, TILES) if ring_bytes(D, warps, STAGES, TILES) + 2048 <= limit else (0, 1)


def usable(q: torch.Tensor, num_kv_heads: int, page_size: int, splits: int = 1) -> bool:
    """Whether this kernel serves q (B, NH, D) over an fp8 cache (module docstring's limits)."""
    if not q.is_cuda or not _cuda.enabled():
        return False
    G, D = q.shape[1] // num_kv_heads, q.shape[2]
    if (
        D not in (64, 128)
        or G > 16
        or page_size % 16
        or q.dtype not in (torch.bfloat16, torch.float16)
    ):
        return False
    if splits > 16 or q.stride(2) != 1 or torch.cuda.get_device_capability(q.device) < (8, 9):
        return False
    return q.device.index not in _failed


def decode_fp8(
    q,
    k_cache,
    v_cache,
    k_scale,
    v_scale,
    block_table,
    seq_lens,
    page_size: int,
    scale: float,
    out,
    mo,
    ml,
    splits: int,
    counters=None,
    warps: int | None = None,
    stages: int | None = None,
    tiles: int | None = None,
    transposed: bool | None = None,
) -> bool:
    """attention.decode_attention's fp8 case (same arguments; mo/ml: its split partials, counters: its merge
    counters or None for the merge kernel). False (the caller runs Triton) when the kernel cannot be built here:
    the reason is printed once."""
    B, NH, D = q.shape
    KVH = k_cache.shape[1]
    G = NH // KVH
    if warps is None:
        sms = torch.cuda.get_device_properties(q.device).multi_processor_count
        warps = warps_for(B * KVH * splits, sms)
    if stages is None:
        stages, tiles = pipeline_for(D, warps, q.device)
    tiles = 1 if tiles is None else tiles
    if transposed is None:
        transposed = TRANSPOSED and G <= 8
    pdl = _triton.pdl(q)  # launched as the Triton kernels around it are (aha._triton)
    try:
        kern = _cuda.compile(
            SOURCE,
            "aha_decode_fp8",
            defines(G, D, page_size, q.dtype, warps, stages, tiles, pdl, transposed, EARLY_LOADS),
        )
    except _cuda.CudaUnavailable as e:
        if q.device.index not in _failed:
            _failed.add(q.device.index)
            print(f"aha: fp8 decode attention falls back to Triton: {e}")
        return False
    if k_scale.stride(1) != 1 or k_cache.stride(2) != 1 or out.stride(2) != 1:
        raise ValueError("decode_fp8: the head dim and the scales' KV-head dim must be contiguous")
    kern(
        (B, KVH, splits),
        (32 * warps,),
        [
            q,
            k_cache,
            v_cache,
            k_scale,
            v_scale,
            block_table,
            seq_lens,
            out,
            mo,
            ml,
            counters if splits > 1 else None,
            float(scale * LOG2E),
            q.stride(0),
            q.stride(1),
            k_cache.stride(0),
            k_cache.stride(1),
            k_scale.stride(0),
            block_table.stride(0),
            out.stride(0),
            out.stride(1),
        ],
        shared=ring_bytes(D, warps, stages, tiles),
        pdl=pdl,
    )
    return True

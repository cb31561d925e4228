"""Torch reference attention: the CPU backend and the tests' oracle for the Triton kernel.

Queries are processed in blocks; a block sees every key it can attend to at once, so each row's
softmax is exact (no online rescaling) and only a [B, H, block, Nk] slice of scores ever exists.
The workbench's streaming scans run on it, so the hot path is written for speed on CPU:

- With no statistic and no score edit there are no scores to look at: torch's SDPA does it.
- GQA without repeat_kv: the G query heads of a KV head are stacked into the rows of one matmul,
  query-major, so a block of queries is a contiguous row range.
- Per block: one QK matmul into a reused buffer, masks written only where they cut (the causal
  diagonal), one softmax, one PV matmul; the row statistics come from cheap reads of what is
  there: lse = m - log p[argmax], entropy = lse - sum_j p_j s_j (one batched dot), key mass from
  the few key columns, received from a column sum.
- ACT touches the sink columns plus one rescale of the block (one sink set per prompt;
  per-head sinks, and sinks found in the call, go through `kernels.act` first).
- Parallelism across blocks, not inside ops: on CPU with several threads, the blocks are split
  between worker threads that each run single-threaded ops. Thousands of small parallel
  regions (one per op) cost more than the ops when cores are shared; independent blocks don't.

No autograd on the statistics path (buffers are written in place).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from .act import calibrated_attention, needs_pairs
from .edits import LayerEdit
from .inputs import Dims, check_inputs, default_scale, query_is_real
from .masking import key_range, query_positions, visible
from .stats import AttentionStatsRequest

# Target size of one block's score buffer: a few MiB stays in cache across the block's passes,
# and the per-block Python overhead stays small.
_BLOCK_BYTES = 8 * 2**20
_SPARSE_SINKS = 64   # more sink/key-set columns than this in a block: dense path instead
# Masked scores get a finite "minus infinity": softmax still gives them exactly 0, and
# sum_j p_j s_j stays finite (0 * -inf would be NaN).
_NEG = torch.finfo(torch.float32).min


def reference_attention(q, k, v, *, causal: bool = True, scale: float | None = None,
                        key_padding_mask: torch.Tensor | None = None,
                        sliding_window: int | None = None, softcap: float | None = None,
                        edit: LayerEdit | None = None,
                        stats: AttentionStatsRequest | None = None, backend: str = "reference",
                        block_size: int | None = None, workers: int | None = None,
                        need_output: bool = True):
    """Attention with edits and statistics, computed in query blocks.

    q [B,H,Nq,D], k/v [B,Hkv,Nk,D] -> (out [B,H,Nq,D] in q's dtype, {name: fp32 stat}).
    block_size: queries per block (default: sized so one block's scores take ~8 MiB).
    workers: threads the blocks are split over (default: torch.get_num_threads() on CPU).
    need_output: False skips the PV product when only statistics are wanted (out is None).
    ACT with per-head sinks, or sinks to find in the call, goes through `kernels.act`.
    """
    d = check_inputs(q, k, v, key_padding_mask, sliding_window, edit, stats)
    if needs_pairs(edit, stats):
        return calibrated_attention(
            reference_attention, q, k, v, causal=causal, scale=scale,
            key_padding_mask=key_padding_mask, sliding_window=sliding_window, softcap=softcap,
            edit=edit, stats=stats, block_size=block_size, workers=workers)
    scale = default_scale(d.head_dim, scale)
    if stats is not None and not stats.any:
        stats = None
    if key_padding_mask is not None and bool(key_padding_mask.all()):
        key_padding_mask = None
    if stats is None and softcap is None and (edit is None or not edit.changes_scores):
        out = _sdpa(q, k, v, d, causal, scale, key_padding_mask, sliding_window, block_size)
        return _scale_heads(out, edit), {}
    with torch.no_grad():
        run = _Pass(q, k, v, d, causal, scale, key_padding_mask, sliding_window, softcap,
                    edit, stats, block_size, need_output)
        n_workers = workers if workers is not None else (
            torch.get_num_threads() if q.device.type == "cpu" else 1)
        n_workers = max(1, min(n_workers, len(run.masks.plan)))
        if n_workers == 1:
            run.blocks(run.masks.plan)
        else:
            # interleaved, so each worker gets short and long (causal) blocks alike
            shares = [run.masks.plan[w::n_workers] for w in range(n_workers)]
            with _single_threaded_ops():
                list(_pool(n_workers).map(run.blocks, shares))
            _trim_heap()
        return run.finish()


def _scale_heads(out: torch.Tensor, edit: LayerEdit | None) -> torch.Tensor:
    if edit is None or edit.head_scale is None:
        return out
    return out * edit.head_scale.to(out.dtype)[None, :, None, None]


def _auto_block(d: Dims, n_cols: int, block_size: int | None) -> int:
    if block_size is not None:
        return max(1, int(block_size))
    per_row = d.batch * d.heads * max(n_cols, 1) * 4
    # at least ~8 blocks once there are a few hundred queries: with causal masking a block
    # computes the keys of its last row for all its rows, so few big blocks (one head, as
    # kernels.act runs them) would compute up to 1.5x the causal half
    few_blocks = max(64, -(-d.n_queries // 8))
    return int(min(d.n_queries, few_blocks, max(16, _BLOCK_BYTES // per_row)))


def _sdpa(q, k, v, d: Dims, causal, scale, key_padding_mask, sliding_window, block_size):
    """Output only, through torch SDPA; masks are built per query block (never Nq x Nk)."""
    gqa = d.kv_heads != d.heads
    simple = key_padding_mask is None and sliding_window is None
    if simple and (not causal or d.n_queries == 1):
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if simple and d.n_queries == d.n_keys:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    out = q.new_empty(q.shape)
    bq = _auto_block(d, d.n_keys, block_size)
    for i0 in range(0, d.n_queries, bq):
        i1 = min(i0 + bq, d.n_queries)
        q_pos = query_positions(d.n_queries, d.n_keys, i0, i1, device=q.device)
        lo, hi = key_range(int(q_pos[0]), int(q_pos[-1]) + 1, d.n_keys, causal, sliding_window)
        mask = visible(q_pos, torch.arange(lo, hi, device=q.device), causal, sliding_window)
        mask = torch.ones(i1 - i0, hi - lo, dtype=torch.bool, device=q.device) if mask is None else mask
        mask = mask[None, None]
        if key_padding_mask is not None:
            mask = mask & key_padding_mask[:, None, None, lo:hi]
        o = F.scaled_dot_product_attention(q[:, :, i0:i1], k[:, :, lo:hi], v[:, :, lo:hi],
                                           attn_mask=mask, scale=scale, enable_gqa=gqa)
        # a row with no visible key comes back NaN from SDPA; define it as 0
        out[:, :, i0:i1] = o.nan_to_num_(0.0) if key_padding_mask is not None else o
    return out


class _Pass:
    """One statistics/edits call: inputs laid out for the block loop, per-row result buffers.

    Rows are (query i, head g) pairs of a [B, Hkv, Nq*G, .] matrix, query-major. `blocks` may run
    on several threads at once: each call owns its score buffers and `received` accumulator,
    and blocks write disjoint rows of everything else.
    """

    def __init__(self, q, k, v, d: Dims, causal, scale, key_padding_mask, sliding_window,
                 softcap, edit, stats, block_size, need_output=True):
        B, H, Hkv, G, Nq, Nk, D = d.batch, d.heads, d.kv_heads, d.group, d.n_queries, d.n_keys, d.head_dim
        dev, f32 = q.device, torch.float32
        self.d, self.q_dtype, self.edit, self.softcap = d, q.dtype, edit, softcap
        self.need_output = need_output
        self.want = want = stats if stats is not None else AttentionStatsRequest()
        self.need_max = want.lse or want.entropy or want.argmax

        self.qr = (q.to(f32) * scale).reshape(B, Hkv, G, Nq, D).transpose(2, 3).reshape(B, Hkv, Nq * G, D)
        # contiguous once here, so no block makes its own copy (HF hands in transposed views)
        self.kT = k.to(f32).transpose(-1, -2).contiguous()              # [B,Hkv,D,Nk]
        self.vf = v.to(f32).contiguous()                                # [B,Hkv,Nk,D]
        self.out = torch.empty(B, Hkv, Nq * G, D, dtype=f32, device=dev) if need_output else None
        self.mass = _KeyMass(want.key_mask, B, Hkv, Nk) if want.key_mass else None
        self.key_bias = None if edit is None else edit.key_bias        # [B,H,Nk]
        self.sink_mask = None if edit is None else edit.sink_mask      # [B,Nk]
        self.beta = None if self.sink_mask is None else \
            edit.act_beta.to(dev, f32).view(-1, Hkv, 1, G)              # [1 or B,Hkv,1,G]
        self.real_q = query_is_real(key_padding_mask, Nq)              # [B,Nq] or None

        rows = self.rows = (B, Hkv, Nq, G)
        new = lambda on, dtype=f32: torch.empty(rows, dtype=dtype, device=dev) if on else None
        self.m = new(self.need_max)                  # row max of the scores
        self.pmax = new(self.need_max)               # p at the row max (before ACT)
        self.argmax = new(want.argmax, torch.long)
        self.e_s = new(want.entropy)                 # sum_j p_j s_j
        self.key_mass = new(self.mass is not None)
        self.act = torch.zeros(2, *rows, dtype=f32, device=dev) if self.sink_mask is not None else None
        self.has_key = torch.ones(B, Nq, dtype=torch.bool, device=dev)
        self.received: list[torch.Tensor] = []       # one accumulator per `blocks` call
        self.gathered = None
        if want.gather_keys is not None:
            self.gathered = torch.empty(*rows, want.gather_keys.shape[-1], dtype=f32, device=dev)
        self.bq = _auto_block(d, Nk, block_size)
        self.masks = _BlockMasks(Nq, Nk, self.bq, causal, sliding_window, key_padding_mask, dev)
        self._lock = threading.Lock()
        # grad and inference modes are thread-local: workers must run in the caller's mode
        self._inference = torch.is_inference_mode_enabled()

    def blocks(self, plan) -> None:
        """Process the query blocks in `plan` [(i0, i1, lo, hi), ...]."""
        with torch.inference_mode(self._inference), torch.no_grad():
            self._blocks(plan)

    def _blocks(self, plan) -> None:
        d, want, f32 = self.d, self.want, torch.float32
        B, Hkv, G, Nk = d.batch, d.kv_heads, d.group, d.n_keys
        s_buf, p_buf = _scratch(B * d.heads * self.bq * Nk, self.qr.device)
        received = torch.zeros(B, Hkv, G, Nk, dtype=f32, device=s_buf.device) if want.received else None
        for i0, i1, lo, hi in plan:
            n_q, n, r0, r1 = i1 - i0, hi - lo, i0 * G, i1 * G
            s = s_buf[: B * Hkv * n_q * G * n].view(B, Hkv, n_q * G, n)
            p = p_buf[: s.numel()].view(s.shape)
            s5, p5 = s.view(B, Hkv, n_q, G, n), p.view(B, Hkv, n_q, G, n)
            torch.matmul(self.qr[:, :, r0:r1], self.kT[..., lo:hi], out=s)
            if self.softcap is not None:
                s.div_(self.softcap).tanh_().mul_(self.softcap)
            if self.key_bias is not None:
                s5.add_(self.key_bias[:, :, lo:hi].to(f32).view(B, Hkv, 1, G, n))
            has_key = self.masks.apply(s5, i0, i1, lo, hi)

            am = None
            if want.argmax:
                m, am = s5.max(dim=-1)                                  # [B,Hkv,n_q,G]
            elif self.need_max:
                m = s5.amax(dim=-1)
            if self.need_max:
                self.m[:, :, i0:i1] = m
            torch.softmax(s, dim=-1, out=p)
            if has_key is not None:
                self.has_key[:, i0:i1] = has_key
                p5.masked_fill_(~has_key[:, None, :, None, None], 0.0)  # rows with no key: 0
            if self.need_max:   # p at the row max is exp(m - lse): read it before ACT
                self.pmax[:, :, i0:i1] = (p5.amax(dim=-1) if am is None else
                                          p5.gather(-1, am[..., None]).squeeze(-1))
            if self.sink_mask is not None:
                _act_block(p5, self.sink_mask[:, lo:hi], self.beta, self.act[:, :, :, i0:i1])
                if want.argmax:   # ACT may move the maximum
                    am = p5.argmax(-1)
            if want.argmax:
                self.argmax[:, :, i0:i1] = am + lo
            if want.entropy:      # sum_j p_j s_j; masked scores are finite, so 0 * s = 0
                self.e_s[:, :, i0:i1] = torch.einsum("...n,...n->...", p5, s5)
            if self.mass is not None:
                self.key_mass[:, :, i0:i1] = self.mass(p5, lo, hi)

            if self.need_output:
                torch.matmul(p, self.vf[:, :, lo:hi], out=self.out[:, :, r0:r1])
            if received is not None:
                pq = p.view(B, Hkv, n_q, G * n)
                r = pq.sum(2) if self.real_q is None else \
                    (self.real_q[:, None, None, i0:i1].to(f32) @ pq).squeeze(2)
                received[..., lo:hi] += r.view(B, Hkv, G, n)
            if self.gathered is not None:
                self.gathered[:, :, i0:i1] = _gather(p5, want.gather_keys[:, i0:i1], lo, hi)
        if received is not None:
            with self._lock:
                self.received.append(received)

    def finish(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Turn the per-row buffers into the output and the statistics, all rows at once."""
        d, want = self.d, self.want
        B, H, Hkv, G, Nq, Nk, D = d.batch, d.heads, d.kv_heads, d.group, d.n_queries, d.n_keys, d.head_dim

        def heads_first(x):   # [B,Hkv,Nq,G,...] -> [B,H,Nq,...]
            return x.transpose(2, 3).reshape(B, H, Nq, *x.shape[4:])

        out = None
        if self.need_output:
            out = heads_first(self.out.view(B, Hkv, Nq, G, D))
            out = _scale_heads(out, self.edit).to(self.q_dtype)
        res = {}
        empty = None if bool(self.has_key.all()) else ~self.has_key[:, None, :, None]  # [B,1,Nq,1]
        if self.need_max:
            lse = self.m - torch.log(self.pmax)
            if self.act is not None:
                lse -= self.act[0]                      # ACT: lse' = lse - log c
            if empty is not None:
                lse.masked_fill_(empty, float("-inf"))
        if want.lse:
            res["lse"] = heads_first(lse)
        if want.entropy:
            e_s = self.e_s if self.act is None else self.e_s + self.act[1]
            ent = (lse - e_s).clamp_min_(0.0)           # H = lse - E_p[s]
            if empty is not None:
                ent.masked_fill_(empty, 0.0)
            res["entropy"] = heads_first(ent)
        if want.argmax:
            am = self.argmax if empty is None else self.argmax.masked_fill(empty, -1)
            res["argmax"] = heads_first(am)
        if self.mass is not None:
            res["key_mass"] = heads_first(self.key_mass)
        if want.received:
            res["received"] = torch.stack(self.received).sum(0).view(B, H, Nk)
        if self.gathered is not None:
            res["gathered"] = heads_first(self.gathered)
        return out, {name: res[name] for name in want.names}


# ---- scratch buffers and CPU block parallelism --------------------------------------------------

_local = threading.local()


def _scratch(numel: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """This thread's score and probability buffers, at least `numel` floats each.

    Kept between calls (a few MiB per thread): one allocation per thread instead of one per
    layer, and no page faults on fresh memory in the hot loop.
    """
    bufs = getattr(_local, "bufs", None)
    if bufs is None or bufs[0].numel() < numel or bufs[0].device != torch.device(device):
        bufs = None   # drop the old pair before allocating the new one
        _local.bufs = None
        with torch.inference_mode(False):   # normal tensors: writable in and out of inference mode
            bufs = tuple(torch.empty(numel, dtype=torch.float32, device=device) for _ in range(2))
        _local.bufs = bufs
    return bufs


_pools: dict[int, ThreadPoolExecutor] = {}
_threads_lock = threading.Lock()
_threads_users = 0
_threads_saved = 1


def _load_malloc_trim():
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim   # glibc only
    except (OSError, AttributeError):
        return None


_malloc_trim = _load_malloc_trim()


def _trim_heap() -> None:
    """Give the worker threads' freed heap memory back to the OS.

    glibc keeps one heap ("arena") per thread; the workers' block temporaries interleave with
    the model's own allocations and the freed space stays in the process, so RSS crept up by
    ~100-150 MB over a SmolLM2 forward. malloc_trim costs ~1 ms per call.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _pool(n: int) -> ThreadPoolExecutor:
    with _threads_lock:
        if n not in _pools:
            _pools[n] = ThreadPoolExecutor(n, thread_name_prefix="interp-attn")
        return _pools[n]


class _single_threaded_ops:
    """Set torch's intra-op threads to 1 while block workers run (the setting is process-wide;
    nested and concurrent users are counted so the last one out restores it)."""

    def __enter__(self):
        global _threads_users, _threads_saved
        with _threads_lock:
            if _threads_users == 0:
                _threads_saved = torch.get_num_threads()
                torch.set_num_threads(1)
            _threads_users += 1

    def __exit__(self, *exc):
        global _threads_users
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_saved)


# ---- block helpers ----------------------------------------------------------------------------

class _KeyMass:
    """Row mass on a key set: a gather of the few columns when the set is small (sinks),
    else a matrix-vector product."""

    def __init__(self, key_mask, B, Hkv, Nk):
        self.cols = key_mask.any(0).nonzero().squeeze(-1)
        self.sparse = len(self.cols) <= _SPARSE_SINKS
        self.key_mask = key_mask
        self.dense = None if self.sparse else \
            key_mask.to(torch.float32)[:, None, None, :, None].expand(B, Hkv, 1, Nk, 1)

    def __call__(self, p5, lo, hi):   # p5 [B,Hkv,n_q,G,n] -> [B,Hkv,n_q,G]
        if not self.sparse:
            B, Hkv, n_q, G, n = p5.shape
            return (p5.view(B, Hkv, 1, n_q * G, n) @ self.dense[..., lo:hi, :]).view(B, Hkv, n_q, G)
        cols = self.cols[(self.cols >= lo) & (self.cols < hi)]
        if len(cols) == 0:
            return p5.new_zeros(p5.shape[:-1])
        sel = self.key_mask[:, cols].to(p5.dtype)[:, None, None, None, :]
        return (p5.index_select(-1, cols - lo) * sel).sum(-1)


class _BlockMasks:
    """The block plan (query ranges and the key range each can see) and the masking of each
    block's scores in place, touching only the columns where some query is cut off."""

    def __init__(self, Nq, Nk, bq, causal, sliding_window, key_padding_mask, dev):
        self.causal, self.window, self.kpm = causal, sliding_window, key_padding_mask
        self.Nq, self.Nk, self.dev = Nq, Nk, dev
        off = Nk - Nq
        self.plan = [(i0, min(i0 + bq, Nq),
                      *key_range(i0 + off, min(i0 + bq, Nq) + off, Nk, causal, sliding_window))
                     for i0 in range(0, Nq, bq)]
        # causal only: the cut is an upper triangle over the block's own positions
        self.tri = (torch.ones(bq, bq, dtype=torch.bool, device=dev).triu_(1)
                    if causal and sliding_window is None else None)

    def apply(self, s5, i0, i1, lo, hi):
        """Write _NEG on invisible scores of s5 [B,Hkv,n_q,G,n]. Returns has_key [B, n_q], or
        None when every row sees a key (always so without padding: a query sees itself)."""
        n_q, off = i1 - i0, self.Nk - self.Nq
        vis = None
        if self.tri is not None:
            a = i0 + off - lo                       # column of the block's first query
            if n_q > 1:
                s5[..., a:a + n_q].masked_fill_(self.tri[:n_q, None, :n_q], _NEG)
        else:
            q_pos = query_positions(self.Nq, self.Nk, i0, i1, device=self.dev)
            vis = visible(q_pos, torch.arange(lo, hi, device=self.dev), self.causal, self.window)
            if vis is not None:
                cut = (~vis).any(0).nonzero()
                if len(cut):
                    a, b = int(cut[0]), int(cut[-1]) + 1
                    s5[..., a:b].masked_fill_(~vis[:, None, a:b], _NEG)
        if self.kpm is None:
            return None
        kpm = self.kpm[:, lo:hi]                                     # [B, n]
        s5.masked_fill_(~kpm[:, None, None, None, :], _NEG)
        if vis is None and self.causal:
            q_pos = query_positions(self.Nq, self.Nk, i0, i1, device=self.dev)
            vis = visible(q_pos, torch.arange(lo, hi, device=self.dev), self.causal, self.window)
        seen = kpm[:, None, :] if vis is None else (kpm[:, None, :] & vis[None])
        return seen.any(-1)                                          # [B, n_q]


def _act_block(p5, sink_mask, beta, act_out):
    """ACT on one block of probabilities p5 [B,Hkv,n_q,G,n], in place, rows stay normalized.

    A row with sink mass s gets p'_sink = beta p and p'_other = c p, c = (1 - beta s)/(1 - s):
    sinks scaled by beta, the removed mass handed to the others in proportion. Rows with s = 1
    have no other key to take the mass and stay unchanged (c = 1, sinks unscaled).
    Writes act_out[0] = log c (lse' = lse - log c, as non-sink scores are unchanged) and
    act_out[1] = sum_sink p'_j * log(beta / c) (the sinks' score shift, for the entropy).
    """
    cols = sink_mask.any(0).nonzero().squeeze(-1)
    if len(cols) == 0:
        return
    sparse = len(cols) <= _SPARSE_SINKS
    if sparse:
        sel = sink_mask[:, cols][:, None, None, None, :]                 # [B,1,1,1,u]
        p_cols = p5.index_select(-1, cols)                               # [B,Hkv,n_q,G,u]
    else:
        sel = sink_mask[:, None, None, None, :]
        p_cols = p5
    s = torch.where(sel, p_cols, 0.0).sum(-1)                            # [B,Hkv,n_q,G]
    # the non-sink mass summed directly, not as 1 - s: exact to fp32 even when s is near 1
    # (a batched matrix-vector product on a view of p5: no block-sized temporary)
    B, n = sink_mask.shape
    rest = torch.bmm(p5.view(B, -1, n), (~sink_mask).to(p5.dtype).view(B, n, 1)).view(s.shape)
    movable = (rest > 0) & (beta != 1.0)
    c = torch.where(movable, (1.0 - beta * s) / torch.where(movable, rest, 1.0), 1.0)
    b = torch.where(movable, beta, 1.0).expand_as(c)
    new_cols = torch.where(sel, p_cols * b[..., None], p_cols * c[..., None])
    if sparse:
        p5.mul_(c[..., None])
        p5.index_copy_(-1, cols, new_cols)
    else:
        p5.copy_(new_cols)
    act_out[0] = torch.log(c)
    sink_new = b * s
    act_out[1] = torch.where(sink_new > 0, sink_new * torch.log(b / c), 0.0)


def _gather(p5, idx, lo, hi):
    """p at key indices idx [B,n_q,T] (-1: none) -> [B,Hkv,n_q,G,T]."""
    B, Hkv, n_q, G, n = p5.shape
    local = (idx - lo).clamp(0, max(n - 1, 0))
    inside = (idx >= lo) & (idx < hi)
    got = p5.gather(-1, local[:, None, :, None, :].expand(B, Hkv, n_q, G, -1))
    return torch.where(inside[:, None, :, None, :], got, 0.0)

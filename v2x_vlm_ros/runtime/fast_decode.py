"""Greedy, grammar-constrained decoding over a static KV cache, without ``generate``.

The trajectory grammar fixes the answer's length and alphabet: ``<s>``, then 2T location
tokens, then ``</s>``. So instead of transformers' generic ``generate`` (dynamic caches,
logits over 51k tokens, stopping criteria, beam bookkeeping), this runs:

- the encoder once per frame (vision tower + projector, the image features scattered into
  the ``<image>`` placeholders, the BART encoder), and the cross-attention keys and values
  of every decoder layer once from its output;
- exactly 2T + 1 decoder steps (inputs ``</s>``, ``<s>``, loc_1 .. loc_{2T-1}) over
  self-attention caches preallocated for the whole answer, attending over the full cache
  with a mask, so every step has the same shapes (what CUDA graphs and compilers need);
- logits only over the allowed location tokens (a slice of the output embedding), whose
  argmax is the next token (``token_choice="greedy"``; or their softmax's mean or median
  bin, ``model.grammar.choose_bins``): the answer is always well-formed.

The layers are BART's own modules (projections, layer norms, feed-forward); only the
attention bookkeeping is ours. In float32 it produces the same tokens as ``generate`` with
the same grammar (``test_fast_decode.py``). On CUDA one decoder step (with its greedy choice)
is captured in a CUDA graph over static buffers (``GraphedDecode``) and replayed 2T + 1
times: one launch per step instead of dozens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from v2x_vlm_ros.model.codec import check_token_choice
from v2x_vlm_ros.model.grammar import choose_bins


class StaticDecoder:
    """The decoder of a ``Florence2ForConditionalGeneration`` for fixed-length answers."""

    def __init__(self, model, allowed_ids: list[int], num_tokens: int, bos: int, start: int,
                 token_choice: str = "greedy"):
        """``allowed_ids``: the location tokens in bin order (bin i is ``allowed_ids[i]``)."""
        self.token_choice = check_token_choice(token_choice)
        dec = model.model.language_model.decoder
        self.model = model
        self.layers = list(dec.layers)
        self.embed_tokens = dec.embed_tokens
        self.positions = dec.embed_positions
        self.embed_norm = dec.layernorm_embedding
        self.final_norm = getattr(dec, "layer_norm", None)
        self.heads = self.layers[0].self_attn.num_heads
        self.head_dim = self.layers[0].self_attn.head_dim
        self.act = self.layers[0].activation_fn
        self.num_tokens = num_tokens  # 2T location tokens
        self.steps = num_tokens + 1  # decoder inputs: start, <s>, loc_1 .. loc_{2T-1}
        self.bos, self.start = bos, start
        weight = model.get_output_embeddings().weight
        self.allowed = torch.tensor(allowed_ids, device=weight.device)
        self.allowed_weight = weight[self.allowed].detach()  # (A, d): logits over the alphabet only

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tower + projector: (B, image tokens, d)."""
        m = self.model.model
        return m.multi_modal_projector(m.vision_tower(pixel_values).last_hidden_state)

    def text_encoder(self, features: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """The image features in the ``<image>`` slots, then the BART encoder: (B, L, d)."""
        m = self.model
        embeds = m.get_input_embeddings()(input_ids)
        slots = (input_ids == m.config.image_token_id).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, features.to(embeds.dtype))
        encoder = m.model.language_model.encoder
        return encoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encoder states of a batch (runs the vision tower and the text encoder once)."""
        return self.text_encoder(self.image_features(pixel_values), input_ids, attention_mask)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    @torch.no_grad()
    def cross_attention(self, encoder_states: torch.Tensor, attention_mask: torch.Tensor):
        """Cross-attention keys/values of every layer, and the additive encoder mask."""
        cross = [(self._split(layer.encoder_attn.k_proj(encoder_states)),
                  self._split(layer.encoder_attn.v_proj(encoder_states))) for layer in self.layers]
        mask = torch.zeros(encoder_states.shape[0], 1, 1, encoder_states.shape[1], dtype=encoder_states.dtype,
                           device=encoder_states.device)
        mask.masked_fill_(attention_mask[:, None, None, :] == 0, torch.finfo(encoder_states.dtype).min)
        return cross, mask

    @torch.no_grad()
    def prepare(self, encoder_states: torch.Tensor, attention_mask: torch.Tensor) -> "DecoderState":
        """Cross-attention keys/values for every layer and empty self-attention caches."""
        b = encoder_states.shape[0]
        cross, mask = self.cross_attention(encoder_states, attention_mask)
        shape = (len(self.layers), b, self.heads, self.steps, self.head_dim)
        keys = torch.zeros(shape, dtype=encoder_states.dtype, device=encoder_states.device)
        return DecoderState(cross, mask, keys, torch.zeros_like(keys))

    def step(self, state: "DecoderState", tokens: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """One decoder step for ``tokens`` (B,) at ``position`` (a 0-d long tensor): fills the
        caches at that position and returns the hidden state (B, d)."""
        # index_select, not weight[position]: indexing by a 0-d tensor reads it back to the
        # host (.item()), which a CUDA graph capture forbids (seen on an H200: the capture
        # failed and every decode ran uncaptured)
        x = self.embed_tokens(tokens[:, None]) + self.positions.weight.index_select(
            0, (position + self.positions.offset).view(1))
        x = self.embed_norm(x)
        # attend to positions 0..position of the cache (a static-shape mask, not a slice)
        visible = torch.arange(self.steps, device=x.device) <= position
        self_mask = torch.zeros(1, 1, 1, self.steps, dtype=x.dtype, device=x.device)
        self_mask.masked_fill_(~visible, torch.finfo(x.dtype).min)
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            q = self._split(attn.q_proj(x))
            state.keys[i].index_copy_(2, position.view(1), self._split(attn.k_proj(x)))
            state.values[i].index_copy_(2, position.view(1), self._split(attn.v_proj(x)))
            h = F.scaled_dot_product_attention(q, state.keys[i], state.values[i], attn_mask=self_mask,
                                               scale=attn.scaling)
            x = layer.self_attn_layer_norm(x + attn.out_proj(h.transpose(1, 2).reshape(x.shape)))
            cross = layer.encoder_attn
            q = self._split(cross.q_proj(x))
            k, v = state.cross[i]
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=state.cross_mask, scale=cross.scaling)
            x = layer.encoder_attn_layer_norm(x + cross.out_proj(h.transpose(1, 2).reshape(x.shape)))
            x = layer.final_layer_norm(x + layer.fc2(self.act(layer.fc1(x))))
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x[:, 0]

    def next_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """The next location token of each row, as ``token_choice`` picks it."""
        return self.allowed.index_select(0, choose_bins(hidden @ self.allowed_weight.T, self.token_choice))

    @torch.no_grad()
    def decode(self, state: "DecoderState") -> torch.Tensor:
        """The 2T location tokens (B, 2T) of a prepared batch."""
        b = state.cross_mask.shape[0]
        device = state.cross_mask.device
        tokens = torch.full((b,), self.start, dtype=torch.long, device=device)
        out = torch.empty((b, self.num_tokens), dtype=torch.long, device=device)
        for pos in range(self.steps):
            hidden = self.step(state, tokens, torch.tensor(pos, device=device))
            if pos == 0:  # the grammar's first answer token is <s>, whatever the logits say
                tokens = torch.full_like(tokens, self.bos)
                continue
            tokens = self.next_tokens(hidden)
            out[:, pos - 1] = tokens
        return out

    def run(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        encoder_states = self.encode(pixel_values, input_ids, attention_mask)
        return self.decode(self.prepare(encoder_states, attention_mask))


def compile_static(decoder: StaticDecoder, backend: str) -> None:
    """Compile the three model stages for ``backend`` in place. ``inductor``: torch.compile
    with static shapes (each new batch size or prompt length compiles once; on CUDA the
    decoder step uses CUDA graphs through mode="reduce-overhead"). ``eager`` leaves them.
    ``tensorrt`` parts come from built engines (``runtime.engine_cache``), not from here."""
    if backend != "inductor":
        return
    cuda = decoder.allowed.device.type == "cuda"
    decoder.image_features = torch.compile(decoder.image_features, dynamic=False)
    decoder.text_encoder = torch.compile(decoder.text_encoder, dynamic=False)
    decoder.step = torch.compile(decoder.step, dynamic=False, mode="reduce-overhead" if cuda else None)


class GraphedDecode:
    """The decode loop over static buffers for one (batch, encoder length), replaying one
    captured decoder step. A CUDA graph reads and writes fixed addresses, so the cross K/V,
    the masks, the caches, the input token and the position live in buffers that each frame
    refills. ``capture=False`` runs the same buffered loop without a graph (CPU, tests)."""

    def __init__(self, decoder: StaticDecoder, batch: int, length: int, dtype: torch.dtype,
                 device, capture: bool = True):
        self.decoder = decoder
        self.batch, self.length = batch, length
        device = torch.device(device)
        states = torch.zeros(batch, length, decoder.layers[0].encoder_attn.k_proj.in_features,
                             dtype=dtype, device=device)
        self.state = decoder.prepare(states, torch.ones(batch, length, dtype=torch.long, device=device))
        self.tokens = torch.full((batch,), decoder.start, dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.graph = None
        self.next = None
        if capture:
            self._capture()

    @torch.no_grad()
    def _step(self) -> torch.Tensor:
        return self.decoder.next_tokens(self.decoder.step(self.state, self.tokens, self.position))

    @torch.no_grad()
    def _capture(self) -> None:
        # warm up on a side stream first (lazy initialisations must not be captured)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.next = self._step()
        self.graph = graph

    @torch.no_grad()
    def decode(self, encoder_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The 2T location tokens (B, 2T), as ``StaticDecoder.decode`` gives them."""
        d = self.decoder
        cross, mask = d.cross_attention(encoder_states, attention_mask)
        for (k, v), (k_buf, v_buf) in zip(cross, self.state.cross):
            k_buf.copy_(k)
            v_buf.copy_(v)
        self.state.cross_mask.copy_(mask)
        self.state.keys.zero_()
        self.state.values.zero_()
        self.tokens.fill_(d.start)
        out = torch.empty((self.batch, d.num_tokens), dtype=torch.long, device=self.tokens.device)
        for pos in range(d.steps):
            self.position.fill_(pos)
            if self.graph is not None:
                self.graph.replay()
                chosen = self.next
            else:
                chosen = self._step()
            if pos == 0:  # the grammar's first answer token is <s>, whatever the logits say
                self.tokens.fill_(d.bos)
                continue
            out[:, pos - 1] = chosen
            self.tokens.copy_(chosen)
        return out


class DecoderState:
    """Per-batch tensors of a decode: cross K/V, the encoder mask, the self-attention cache."""

    def __init__(self, cross, cross_mask, keys, values):
        self.cross = cross
        self.cross_mask = cross_mask
        self.keys = keys
        self.values = values

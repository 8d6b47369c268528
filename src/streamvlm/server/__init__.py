"""`streamvlm serve`: one loaded model, many streaming sessions, a web page, an OpenAI chat API.

    from streamvlm.server.app import create_app, make_server
    from streamvlm.server.sessions import ServerOptions

    app = create_app(load_model("model_dir"), ServerOptions(max_sessions=4))
    make_server(app, "127.0.0.1", 8000).run()

WebSocket protocol, `/v1/stream` (token: `Authorization: Bearer T` or `?token=T`):

Client -> server, JSON text messages (any order after `start`; `start` is optional):
  {"type": "start", "options": {...}, "raw": {"width": W, "height": H}}
      options: fps, query, previous_text, system_prompt, max_new_tokens, greedy, temperature,
      repetition_penalty, seed, vision_window, text_rounds, text_sink, text_window (each within
      its range, `protocol.NUMBER_OPTIONS`); the cache policy stays the server's. "raw" only for
      raw RGB24 binary frames. A refused start is an error event; the session then takes no frame
      or pull until a valid start arrives.
  {"type": "frame", "t": 12.5, "image": "<base64 JPEG/PNG or data: URL>"}
      (raw RGB24: add "width" and "height"). `t` is stream time in seconds, 0 to 1e10; second k
      is stepped once it has fps frames (at k + j/fps) or a frame of a later second arrives.
  {"type": "pull", "url": "https://...", "start": 0, "seconds": 60}
      the server reads the source itself (http/https/rtsp/rtmp/srt on a public host, unless
      --allow-private-urls; a local path or file: URL only inside --allow-dir, and a local HLS
      playlist only if every file it lists is inside too); the session ends when the source does.
  {"type": "stop"}   step what is buffered, send its commentary, close.
  {"type": "ping"}   -> {"type": "pong"}
Client -> server, binary messages: a frame, 8 bytes float64 little-endian `t`, then JPEG/PNG bytes
  (or raw RGB24 of the size given in start's "raw").

Server -> client, JSON text messages:
  {"type": "ready", "session", "model", "defaults", "limits"}      on connect
  {"type": "started", "config", "files"}                           after start
  {"type": "commentary", "start", "end", "text"}                   one per second ("" = silence)
  {"type": "stats", "t", "step_ms", ..., "cache_tokens", "kv_bytes", "latency_ms", "queued", ...}
  {"type": "dropped", "start", "end"}    a live second dropped: max_queued_seconds were waiting in
      the session, or it waited that long for its turn on the model shared by every session
  {"type": "error", "message", "fatal"}  a bad message (ignored; the session goes on) or a failure
      that ends the session (fatal: its source, the model, writing its files)
  {"type": "closed", "reason", "seconds", "files"}   last event; then the socket closes with
      1000 (stop, source ended), 1001 (idle timeout, server shutdown) or 1011 (model error,
      write error, source failed).
Refusals close right after the handshake: 1008 unauthorized, 1013 all sessions in use (HTTP
routes answer 401 / 429 / 413 / 400 with an OpenAI-style error body).
"""

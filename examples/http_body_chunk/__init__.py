"""http_body_chunk: reads a request body chunk by chunk as it arrives and rejects the request
with 403 as soon as a chunk contains ``pattern``.

Port of the proxy-wasm Go SDK's ``examples/http_body_chunk``.
"""

import proxywasm
from proxywasm import Action, HttpContext, log


@proxywasm.register
class ChunkScanner(HttpContext):
    read_size = 0  # bytes of the body already scanned
    chunks = 0

    def on_request_body(self, body, end_of_stream):
        log.info(f"on_request_body called. body size: {len(body)}, read so far: {self.read_size}, end: {end_of_stream}")
        # Envoy keeps buffering while we pause: the body holds everything so far, new bytes at the end.
        if len(body) > self.read_size:
            self.chunks += 1
            chunk = body.read(self.read_size)
            log.info(f"read chunk size: {len(chunk)}")
            self.read_size += len(chunk)
            if b"pattern" in chunk:
                message = f"pattern found in chunk: {self.chunks}"
                log.info(message)
                self.send_response(403, message, [("powered-by", "proxy-wasm-python")])
                log.info("local 403 response sent")
                return Action.PAUSE
        if not end_of_stream:
            return Action.PAUSE
        if self.read_size != len(body):
            log.error(f"read data does not match the expected total size: {self.read_size} != {len(body)}")
        log.info("pattern not found")
        return Action.CONTINUE

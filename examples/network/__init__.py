"""network: an L4 filter that logs each connection's data in both directions, the upstream's
address and cluster metadata, and counts completed connections.

Port of the proxy-wasm Go SDK's ``examples/network``.
"""

import proxywasm
from proxywasm import Counter, StreamContext, log, properties

connections = Counter("proxy_wasm_python.connection_counter")


@proxywasm.register
class ConnectionLogger(StreamContext):
    def on_new_connection(self):
        log.info("new connection!")

    def on_downstream_data(self, data, end_of_stream):
        if len(data):
            log.info(f">>>>>> downstream data received >>>>>>\n{data.read().decode(errors='replace')}")

    def on_downstream_close(self, peer):
        log.info("downstream connection close!")

    def on_upstream_data(self, data, end_of_stream):
        if not len(data):
            return
        log.info(f"remote address: {properties.get_str('upstream', 'address')}")
        for key, value in properties.get_map("xds", "cluster_metadata", "filter_metadata", "location") or []:
            log.info(f"upstream cluster metadata location[{key.decode()}]={value.decode()}")
        log.info(f"<<<<<< upstream data received <<<<<<\n{data.read().decode(errors='replace')}")

    def on_done(self):
        connections.increment()
        log.info("connection complete!")
        return True

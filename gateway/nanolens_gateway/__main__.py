"""``python -m nanolens_gateway``: the gateway (settings from NANOLENS_* variables)."""

import asyncio
import logging

from nanolens_gateway.auth import GatewayAuth, parse_tokens
from nanolens_gateway.domains import domains
from nanolens_gateway.server import GatewayServicer, GatewaySettings, servicer
from nanolens_runtime.server import serve
from nanolens_runtime.settings import ServerSettings, StorageSettings, from_env
from nanolens_runtime.storage import ObjectStore
from nanolens_runtime.tls import UpstreamTlsSettings
from nanolens_runtime.version import SERVICE_VERSION


def main() -> None:
    server = from_env(ServerSettings)
    gateway = from_env(GatewaySettings)
    storage = from_env(StorageSettings)

    async def build():
        # one client per registered domain that has an address (NANOLENS_<DOMAIN>_ADDR)
        upstream = from_env(UpstreamTlsSettings).channel_credentials()  # None: plaintext to the services
        clients = {d.name: d.client(d.address(), server.max_message_mb, upstream) for d in domains() if d.address()}
        impl = GatewayServicer(gateway, ObjectStore.from_settings(storage), clients)

        async def warm_up():
            if not tokens:
                logging.getLogger("nanolens.auth").warning(
                    "NANOLENS_GATEWAY_TOKENS is empty: the gateway accepts unauthenticated calls")
            await asyncio.to_thread(impl.ensure_buckets)

        return [servicer(impl)], warm_up

    tokens = parse_tokens(gateway.tokens)  # a broken table stops the start, naming the entry
    auth = GatewayAuth(tokens, gateway.results_bucket)  # always: it also writes the audit line of every call
    asyncio.run(serve("gateway", SERVICE_VERSION, "none", server, build, extra_interceptors=[auth]))


if __name__ == "__main__":
    main()

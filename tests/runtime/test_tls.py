"""TLS on the gateway and mutual TLS between the gateway and the domain services, with a certificate
authority made at run time: the whole path works with the right certificates and refuses callers
without them; kubelet's plaintext probe port serves health and nothing else."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens.spectra.v1 import spectra_pb2, spectra_pb2_grpc
from nanolens_cli.stack import free_port
from nanolens_runtime.server import GrpcApp, Servicer
from nanolens_runtime.settings import ServerSettings
from nanolens_runtime.tls import TlsSettings, UpstreamTlsSettings, channel_credentials
from wire import GatewayClient


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(folder: Path, stem: str, key, cert) -> tuple[str, str]:
    key_path, cert_path = folder / f"{stem}.key", folder / f"{stem}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


def make_ca(folder: Path, name: str) -> dict:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": _write(folder, f"{name}-ca", ca_key, ca)[0]}
    usages = {"server": x509.ExtendedKeyUsageOID.SERVER_AUTH, "client": x509.ExtendedKeyUsageOID.CLIENT_AUTH}
    for role, usage in usages.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(f"{name}-{role}")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[role] = _write(folder, f"{name}-{role}", key, cert)
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    return make_ca(folder, "nanolens"), make_ca(folder, "intruder")


@pytest.fixture(scope="module")
def tls_stack(pki, start_stack):
    """Gateway and spectra service, every server on TLS requiring client certificates of the CA;
    the gateway presents its client certificate to the service."""
    ours, _ = pki
    env = {"NANOLENS_TLS_CERT": ours["server"][0], "NANOLENS_TLS_KEY": ours["server"][1],
           "NANOLENS_TLS_CLIENT_CA": ours["ca"], "NANOLENS_UPSTREAM_CA": ours["ca"],
           "NANOLENS_UPSTREAM_CERT": ours["client"][0], "NANOLENS_UPSTREAM_KEY": ours["client"][1]}
    return start_stack("tls", extra_env=env, domains=("spectra",))[1]


def gateway_env(monkeypatch, ca: str, cert: tuple[str, str] | None) -> None:
    monkeypatch.setenv("NANOLENS_GATEWAY_CA", ca)
    for variable, value in zip(("NANOLENS_CLIENT_CERT", "NANOLENS_CLIENT_KEY"), cert or ("", ""), strict=True):
        monkeypatch.setenv(variable, value)


def test_the_whole_path_runs_on_mutual_tls(tls_stack, pki, monkeypatch, tmp_path):
    ours, _ = pki
    gateway_env(monkeypatch, ours["ca"], ours["client"])
    client = GatewayClient(tls_stack.gateway)
    path = tmp_path / "spectrum.txt"
    path.write_text("".join(f"{100 + 3 * i} {1000 + (i % 5) * 20}\n" for i in range(960)))
    ref = client.upload(path, timeout=60).object
    response = client.analyze(ref, gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=120)  # gateway -> spectra on mTLS
    assert response.provenance.service_name == "spectra"
    client.close()


@pytest.mark.parametrize("caller", ["plaintext", "no client certificate", "another CA's certificate"])
def test_callers_without_the_right_certificate_are_refused(tls_stack, pki, caller):
    ours, theirs = pki
    for address in (tls_stack.gateway, tls_stack.services["spectra"]):
        if caller == "plaintext":
            channel = grpc.insecure_channel(address)
        else:
            cert = theirs["client"] if caller == "another CA's certificate" else ("", "")
            channel = grpc.secure_channel(address, channel_credentials(ours["ca"], *cert))
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, (address, info.value)
        channel.close()


def test_the_service_accepts_the_gateways_client_certificate(tls_stack, pki):
    ours, _ = pki
    channel = grpc.secure_channel(tls_stack.services["spectra"], channel_credentials(ours["ca"], *ours["client"]))
    models = spectra_pb2_grpc.SpectraServiceStub(channel).ListModels(spectra_pb2.ListModelsRequest(), timeout=30)
    assert models.models
    channel.close()


class Models(gateway_pb2_grpc.GatewayServicer):
    async def ListModels(self, request, context):
        return gateway_pb2.ListModelsResponse()


async def test_the_probe_port_serves_health_in_plaintext_and_nothing_else(pki):
    ours, _ = pki
    probe = free_port()
    tls = TlsSettings(cert=ours["server"][0], key=ours["server"][1], client_ca=ours["ca"], probe_port=probe)
    full_name = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name
    app = GrpcApp([Servicer(Models(), gateway_pb2_grpc.add_GatewayServicer_to_server, full_name)],
                  ServerSettings(metrics_port=-1), tls=tls)
    await app.start("127.0.0.1:0")
    await app.set_serving(True)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe}") as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await gateway_pb2_grpc.GatewayStub(channel).ListModels(gateway_pb2.ListModelsRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    await app.set_serving(False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe}") as channel:
        status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING  # the probe sees the drain
    await app.server.stop(0)
    await app.probe_server.stop(0)


def test_half_configured_tls_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ValueError, match="NANOLENS_TLS_CERT and NANOLENS_TLS_KEY go together"):
        TlsSettings(cert=str(tmp_path / "a.crt")).server_credentials()
    with pytest.raises(ValueError, match="NANOLENS_TLS_CLIENT_CA needs"):
        TlsSettings(client_ca=str(tmp_path / "ca.crt")).server_credentials()
    with pytest.raises(ValueError, match="NANOLENS_TLS_KEY .* cannot be read"):
        TlsSettings(cert=str(tmp_path / "missing.crt"), key=str(tmp_path / "missing.key")).server_credentials()
    with pytest.raises(ValueError, match="NANOLENS_UPSTREAM_CERT and NANOLENS_UPSTREAM_KEY need NANOLENS_UPSTREAM_CA"):
        UpstreamTlsSettings(cert="x.crt", key="x.key").channel_credentials()
    assert TlsSettings().server_credentials() is None and UpstreamTlsSettings().channel_credentials() is None

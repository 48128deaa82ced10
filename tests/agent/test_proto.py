"""The checked-in Workload API proto is wire-compatible with the spiffe package's, and regenerates cleanly."""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from spiffe._proto import workload_pb2 as theirs

from ztid._proto import build
from ztid._proto import workload_pb2 as ours


def _shape(module: object) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(fd)  # type: ignore[attr-defined]
    fd.ClearField("name")
    fd.ClearField("options")
    fd.ClearField("source_code_info")
    return fd


def test_same_package_service_messages_and_field_numbers_as_the_spiffe_package() -> None:
    a, b = _shape(ours), _shape(theirs)
    assert a.package == b.package == ""  # no package: the service is "/SpiffeWorkloadAPI/..."
    assert [s.name for s in a.service] == ["SpiffeWorkloadAPI"]
    assert a.service == b.service
    assert list(a.message_type) == list(b.message_type)


def test_generated_code_is_what_build_produces() -> None:
    assert build.main(["--check"]) == 0


def test_both_descriptor_sets_load_in_one_process() -> None:
    # The spiffe package registers the same global names; ours lives in a private pool.
    assert ours.X509SVIDRequest.DESCRIPTOR.full_name == theirs.X509SVIDRequest.DESCRIPTOR.full_name
    assert ours.X509SVIDRequest is not theirs.X509SVIDRequest
    wire = theirs.X509SVID(spiffe_id="spiffe://a/b", x509_svid=b"c", x509_svid_key=b"k", bundle=b"b", hint="h").SerializeToString()
    parsed = ours.X509SVID.FromString(wire)
    assert (parsed.spiffe_id, parsed.x509_svid, parsed.x509_svid_key, parsed.bundle, parsed.hint) == (
        "spiffe://a/b", b"c", b"k", b"b", "h")

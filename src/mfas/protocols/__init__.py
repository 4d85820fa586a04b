"""Named protocols: sources, selection data, targets, test-time modalities, averaging."""

from mfas.protocols.core import DataRef, Protocol, TestSet, protocol_from_dict
from mfas.protocols.registry import get_protocol, list_protocols, load_protocol_file, register_protocol
from mfas.protocols.resolve import StoreSet, load_datasets_yaml, parse_store_args, resolve

__all__ = [
    "DataRef",
    "Protocol",
    "StoreSet",
    "TestSet",
    "get_protocol",
    "list_protocols",
    "load_datasets_yaml",
    "load_protocol_file",
    "parse_store_args",
    "protocol_from_dict",
    "register_protocol",
    "resolve",
]

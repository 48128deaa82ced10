"""Generated protobuf/gRPC code for proto/*.proto; never hand-edited (regenerate: ``python -m ztid._proto.build``)."""

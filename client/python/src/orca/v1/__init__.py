"""Stubs generated from proto/orca/v1/*.proto by client/python/generate.sh (grpcio-tools
1.85.1). Do not edit them; regenerate after changing a .proto."""

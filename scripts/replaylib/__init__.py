"""replaylib: reading (and replaying) coreio-vm recordings (docs/record-replay.md)."""

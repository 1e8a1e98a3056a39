"""Capture I/O: classic pcap and pcapng files read into and written from packet batches."""

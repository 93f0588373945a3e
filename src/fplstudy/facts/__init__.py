"""Facts: datasets, cuttable models, FLOP counts, partitioners, device/link profiles, topologies."""

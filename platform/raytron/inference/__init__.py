"""Load trained models from their folders and run them (Ray Data batch inference, Ray Serve)."""

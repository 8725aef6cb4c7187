"""Kubernetes: RayJobs rendered from recipes (`render`) and sent to a cluster (`cluster`)."""

"""Ray Serve application: an HTTP ingress composed with the summarizer, classifier, topic model and embedder."""

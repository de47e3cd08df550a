//! Exporting the model: Prometheus metrics and the JSON API.

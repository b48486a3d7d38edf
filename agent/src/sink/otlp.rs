//! OTLP sink: records as log records, counters as metrics, optional spans per use event.

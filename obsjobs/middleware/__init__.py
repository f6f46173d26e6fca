"""Provider middleware: metrics, concurrency limits and the base class for your own."""

"""Protocol edges (SOAP, REST, files, queues, feeds); they depend on bus, never the reverse."""

"""The web console (運用コンソール): server-rendered pages for municipal IT staff, mounted on the
hub through the ``renkei.routers`` entry point (``adapters.console.routes:router``)."""

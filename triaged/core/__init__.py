"""Pure pieces every part of triaged shares: no I/O, no imports from the rest of triaged."""

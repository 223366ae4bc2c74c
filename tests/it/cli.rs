//! The real binary: exit codes, one-line errors, secrets never in logs or tables.

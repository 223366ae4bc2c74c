//! Several real replicas, crashes and database faults: nothing lost, duplicates bounded.

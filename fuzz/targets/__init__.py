"""One fuzz target per parser of outside input (see fuzz.engine for the contract)."""

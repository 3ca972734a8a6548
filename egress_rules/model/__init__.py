"""Data: the compiler's input (cluster state, config) and output (RuleSet)."""

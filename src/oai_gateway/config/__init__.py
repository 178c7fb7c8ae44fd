"""Configuration: the environment, the providers file, validated together once."""

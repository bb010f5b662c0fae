"""Provider adapters against local HTTP servers that speak each wire format."""

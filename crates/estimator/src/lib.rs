//! GPU memory estimation for LLM inference servers.

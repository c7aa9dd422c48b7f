//! Test support: throwaway PostgreSQL databases and unique broker prefixes.

//! Helpers shared by the workspace's examples and benchmarks.

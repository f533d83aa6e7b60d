//! Supervised mode: seccomp user notification holds a program's socket calls
//! until user space decides. (Being built.)

//! All of keyflip's Azure traffic: credentials, clouds, ARM, Key Vault, the SharedKey
//! data-plane probe and Databricks. Only this module knows Azure's wire formats.

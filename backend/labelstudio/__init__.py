"""Label Studio: its API client, what /setup told us, and its labeling config."""

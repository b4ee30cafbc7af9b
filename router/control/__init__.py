"""The rollout control plane: one rollout state per model, shared by every
replica through Redis, changed at runtime through the admin API."""

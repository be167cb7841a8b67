"""Data safety, no pytest: ownership tags, session leases, claims on existing instances, garbage left by dead
sessions, and ZFS restore rules (internal; ``docs/explanation/ownership`` describes the model)."""

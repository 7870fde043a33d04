-- What each live controller decodes on the wire (shared/wire.py WIRE): 2 takes probes'
-- result batches. Written with every lease renewal, together with the lease_until it was
-- written with: a controller of an earlier version renews its lease without touching these
-- columns (even when it reuses the id of a newer one), so a wire_lease_until behind
-- lease_until means that controller is at wire 1, whatever `wire` says.
ALTER TABLE controllers ADD COLUMN IF NOT EXISTS wire smallint NOT NULL DEFAULT 1;
ALTER TABLE controllers ADD COLUMN IF NOT EXISTS wire_lease_until timestamptz;

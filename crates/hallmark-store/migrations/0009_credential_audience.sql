-- The audiences a JWT-SVID was minted for (comma-joined, in the order asked);
-- NULL for X.509-SVIDs and for JWTs recorded before this column existed.
ALTER TABLE credentials ADD COLUMN audience TEXT;

package awskms

// BodyFirstChunk is the most a stalled request body holds before more of
// it arrives, for the tests of the bounds on bodies in flight.
const BodyFirstChunk = bodyFirstChunk

package broker

// Region is the AWS region this service names in its ARNs; fronts that
// speak AWS protocols check request signatures against it.
func (s *Service) Region() string { return s.cfg.Region }

// Account is the 12-digit account this service names in its ARNs.
func (s *Service) Account() string { return s.cfg.Account }

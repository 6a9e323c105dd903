package aws

// TokensDimension is the dimension TokenBillingTracker bills: millions of
// tokens.
const TokensDimension = "tokens_1m"

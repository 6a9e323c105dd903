// Package depcheck imports the clouds' SDKs that the integrations use, so
// that go.mod keeps them at the versions this machine's module proxy serves
// until the integrations import them themselves. It is removed then.
package depcheck

import (
	_ "cloud.google.com/go/pubsub/v2"
	_ "cloud.google.com/go/pubsub/v2/pstest"
	_ "github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	_ "github.com/MicahParks/keyfunc/v3"
	_ "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/service/marketplaceentitlementservice"
	_ "github.com/aws/aws-sdk-go-v2/service/marketplacemetering"
	_ "github.com/aws/aws-sdk-go-v2/service/sqs"
	_ "github.com/golang-jwt/jwt/v5"
	_ "google.golang.org/api/cloudcommerceprocurement/v1"
	_ "google.golang.org/api/idtoken"
	_ "google.golang.org/api/option"
	_ "google.golang.org/api/servicecontrol/v1"
)

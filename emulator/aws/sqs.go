package aws

import (
	"context"
	"crypto/md5" //nolint:gosec // SQS's MD5OfBody
	"encoding/hex"
	"net/http"
	"slices"
	"time"

	"github.com/google/uuid"
)

// The emulator also holds SQS queues (AWS JSON 1.0, X-Amz-Target
// AmazonSQS.*): EventBridge rules can target a queue, which the seller
// reads with the official SQS client. Only ReceiveMessage and
// DeleteMessage are served, which is what a consumer needs.

type sqsMessage struct {
	id, body  string
	receipts  []string // every receipt handle handed out: AWS accepts an earlier one too
	visibleAt time.Time
}

// sqsError is an SQS error, with the x-amzn-query-error value SQS sends.
func sqsError(code, query, format string, a ...any) *apiError {
	ae := errorf(code, format, a...)
	ae.query = query + ";Sender"
	return ae
}

// CreateQueue makes an empty queue; Enqueue and EnqueueRaw make theirs.
// Receiving from a queue that does not exist is QueueDoesNotExist.
func (e *Emulator) CreateQueue(queueURL string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.queues == nil {
		e.queues = map[string][]*sqsMessage{}
	}
	if _, ok := e.queues[queueURL]; !ok {
		e.queues[queueURL] = []*sqsMessage{}
	}
}

// Enqueue puts an EventBridge event about the buyer with key on the
// queue named by queueURL, as an EventBridge rule with an SQS target does.
func (e *Emulator) Enqueue(queueURL, detailType, buyerKey string) error {
	body, err := e.EventBridgeEvent(detailType, buyerKey)
	if err != nil {
		return err
	}
	e.EnqueueRaw(queueURL, string(body))
	return nil
}

// EnqueueRaw puts any body on a queue.
func (e *Emulator) EnqueueRaw(queueURL, body string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.queues == nil {
		e.queues = map[string][]*sqsMessage{}
	}
	e.queues[queueURL] = append(e.queues[queueURL], &sqsMessage{id: uuid.NewString(), body: body})
}

// QueueLen is the number of messages not deleted from a queue.
func (e *Emulator) QueueLen(queueURL string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queues[queueURL])
}

const sqsVisibility = 30 * time.Second

func (e *Emulator) sqsReceive(ctx context.Context, body []byte) (any, error) {
	var in struct {
		QueueUrl            string
		MaxNumberOfMessages int
		WaitTimeSeconds     int
		VisibilityTimeout   *int
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.QueueUrl == "" {
		return nil, sqsError("MissingParameter", "MissingParameter", "QueueUrl is required")
	}
	maxN := in.MaxNumberOfMessages
	if maxN <= 0 {
		maxN = 1
	}
	if maxN > 10 {
		return nil, sqsError("InvalidParameterValue", "InvalidParameterValue", "MaxNumberOfMessages must be 1..10")
	}
	if !e.queueExists(in.QueueUrl) {
		return nil, sqsError("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
	}
	visibility := sqsVisibility
	if in.VisibilityTimeout != nil {
		if *in.VisibilityTimeout < 0 || *in.VisibilityTimeout > 43200 {
			return nil, sqsError("InvalidParameterValue", "InvalidParameterValue", "VisibilityTimeout must be 0..43200")
		}
		visibility = time.Duration(*in.VisibilityTimeout) * time.Second
	}
	deadline := time.Now().Add(time.Duration(min(max(in.WaitTimeSeconds, 0), 20)) * time.Second)
	type msg struct {
		MessageId, ReceiptHandle, MD5OfBody, Body string
	}
	for {
		out := []msg{} // AWS writes no null here
		e.mu.Lock()
		now := time.Now()
		for _, m := range e.queues[in.QueueUrl] {
			if len(out) == maxN {
				break
			}
			if m.visibleAt.After(now) {
				continue
			}
			m.visibleAt = now.Add(visibility)
			receipt := uuid.NewString()
			m.receipts = append(m.receipts, receipt)
			sum := md5.Sum([]byte(m.body)) //nolint:gosec // SQS's MD5OfBody
			out = append(out, msg{m.id, receipt, hex.EncodeToString(sum[:]), m.body})
		}
		e.mu.Unlock()
		if len(out) > 0 || !time.Now().Before(deadline) {
			return map[string]any{"Messages": out}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (e *Emulator) sqsDelete(_ context.Context, body []byte) (any, error) {
	var in struct{ QueueUrl, ReceiptHandle string }
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	q, ok := e.queues[in.QueueUrl]
	if !ok {
		return nil, sqsError("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
	}
	for i, m := range q {
		if slices.Contains(m.receipts, in.ReceiptHandle) {
			e.queues[in.QueueUrl] = append(q[:i], q[i+1:]...)
			return map[string]any{}, nil
		}
	}
	return nil, sqsError("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", "receipt handle %q is invalid", in.ReceiptHandle)
}

func (e *Emulator) queueExists(url string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.queues[url]
	return ok
}

func (e *Emulator) serveSQS(w http.ResponseWriter, r *http.Request, target string, body []byte) {
	var out any
	var err error
	switch target {
	case "AmazonSQS.ReceiveMessage":
		out, err = e.sqsReceive(r.Context(), body)
	case "AmazonSQS.DeleteMessage":
		out, err = e.sqsDelete(r.Context(), body)
	default:
		err = sqsError("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "%s is not emulated", target)
	}
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.0")
	writeJSON(w, out)
}

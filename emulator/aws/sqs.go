package aws

import (
	"context"
	"crypto/md5" //nolint:gosec // SQS's MD5OfBody
	"encoding/hex"
	"net/http"
	"time"

	"github.com/google/uuid"
)

// The emulator also holds SQS queues (AWS JSON 1.0, X-Amz-Target
// AmazonSQS.*): EventBridge rules can target a queue, which the seller
// reads with the official SQS client. Only ReceiveMessage and
// DeleteMessage are served, which is what a consumer needs.

type sqsMessage struct {
	id, receipt, body string
	visibleAt         time.Time
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
	}
	if err := decode(body, &in); err != nil {
		return nil, err
	}
	if in.QueueUrl == "" {
		return nil, errorf("MissingParameter", "QueueUrl is required")
	}
	maxN := in.MaxNumberOfMessages
	if maxN <= 0 {
		maxN = 1
	}
	if maxN > 10 {
		return nil, errorf("InvalidParameterValue", "MaxNumberOfMessages must be 1..10")
	}
	deadline := time.Now().Add(time.Duration(min(max(in.WaitTimeSeconds, 0), 20)) * time.Second)
	type msg struct {
		MessageId, ReceiptHandle, MD5OfBody, Body string
	}
	for {
		var out []msg
		e.mu.Lock()
		now := time.Now()
		for _, m := range e.queues[in.QueueUrl] {
			if len(out) == maxN {
				break
			}
			if m.visibleAt.After(now) {
				continue
			}
			m.visibleAt = now.Add(sqsVisibility)
			m.receipt = uuid.NewString()
			sum := md5.Sum([]byte(m.body)) //nolint:gosec // SQS's MD5OfBody
			out = append(out, msg{m.id, m.receipt, hex.EncodeToString(sum[:]), m.body})
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
	q := e.queues[in.QueueUrl]
	for i, m := range q {
		if m.receipt != "" && m.receipt == in.ReceiptHandle {
			e.queues[in.QueueUrl] = append(q[:i], q[i+1:]...)
			return map[string]any{}, nil
		}
	}
	return nil, errorf("ReceiptHandleIsInvalid", "receipt handle %q is invalid", in.ReceiptHandle)
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
		err = &apiError{status: http.StatusBadRequest, code: "UnsupportedOperation", msg: target + " is not emulated"}
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

package microsandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
)

// ErrPathEscape is returned (wrapped in an *Error) by every VolumeFs method
// when relPath is absolute, climbs out of the volume root with "..", or
// leads out of it through a symlink.
var ErrPathEscape = errors.New("microsandbox: path escapes volume root")

// ErrorKind identifies what kind of failure an *Error is. Each kind is
// itself an error value, so errors.Is(err, ErrVolumeNotFound) tells a
// missing volume apart.
type ErrorKind int

const (
	// ErrUnknown is a failure the SDK cannot classify.
	ErrUnknown ErrorKind = iota
	// ErrSandboxNotFound: no sandbox by that name.
	ErrSandboxNotFound
	// ErrSandboxNotRunning: the sandbox exists but is not in a state that
	// allows this (e.g. exec into a stopped sandbox, start a running one).
	ErrSandboxNotRunning
	// ErrSandboxAlreadyExists: a sandbox of that name exists.
	ErrSandboxAlreadyExists
	// ErrSandboxStillRunning: removing a running sandbox without force.
	ErrSandboxStillRunning
	// ErrVolumeNotFound: no volume by that name.
	ErrVolumeNotFound
	// ErrVolumeAlreadyExists: a volume of that name exists.
	ErrVolumeAlreadyExists
	// ErrVolumeInUse: the volume is used by a running sandbox.
	ErrVolumeInUse
	// ErrExecTimeout: a command ran past WithExecTimeout and was killed.
	ErrExecTimeout
	// ErrExecFailed: the guest agent failed to run or relay a command.
	ErrExecFailed
	// ErrFilesystem: a file operation failed (not a directory, not empty,
	// permission denied...).
	ErrFilesystem
	// ErrPathNotFound: no file or directory at that path.
	ErrPathNotFound
	// ErrNoSpace: a volume's quota or disk is full.
	ErrNoSpace
	// ErrImageNotFound: no such image (in the store or the registry).
	ErrImageNotFound
	// ErrImageInUse: a sandbox was created from the image.
	ErrImageInUse
	// ErrImagePullFailed: the registry failed or sent a bad image.
	ErrImagePullFailed
	// ErrInvalidConfig: a mount or sandbox configuration was refused.
	ErrInvalidConfig
	// ErrInvalidArgument: a bad name, value or path.
	ErrInvalidArgument
	// ErrCancelled: the context ended first.
	ErrCancelled
	// ErrServerUnavailable: `msb serve` does not answer on the socket.
	ErrServerUnavailable
	// ErrUnsupportedOperation: the server does not know this operation.
	ErrUnsupportedOperation
	// ErrIO: a host I/O error on the server.
	ErrIO
	// ErrInternal: any other failure of the server or the VM.
	ErrInternal
)

var kindNames = map[ErrorKind]string{
	ErrUnknown:              "Unknown",
	ErrSandboxNotFound:      "SandboxNotFound",
	ErrSandboxNotRunning:    "SandboxNotRunning",
	ErrSandboxAlreadyExists: "SandboxAlreadyExists",
	ErrSandboxStillRunning:  "SandboxStillRunning",
	ErrVolumeNotFound:       "VolumeNotFound",
	ErrVolumeAlreadyExists:  "VolumeAlreadyExists",
	ErrVolumeInUse:          "VolumeInUse",
	ErrExecTimeout:          "ExecTimeout",
	ErrExecFailed:           "ExecFailed",
	ErrFilesystem:           "Filesystem",
	ErrPathNotFound:         "PathNotFound",
	ErrNoSpace:              "NoSpace",
	ErrImageNotFound:        "ImageNotFound",
	ErrImageInUse:           "ImageInUse",
	ErrImagePullFailed:      "ImagePullFailed",
	ErrInvalidConfig:        "InvalidConfig",
	ErrInvalidArgument:      "InvalidArgument",
	ErrCancelled:            "Cancelled",
	ErrServerUnavailable:    "ServerUnavailable",
	ErrUnsupportedOperation: "UnsupportedOperation",
	ErrIO:                   "IO",
	ErrInternal:             "Internal",
}

// String names the kind.
func (k ErrorKind) String() string {
	if n, ok := kindNames[k]; ok {
		return n
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// Error makes a kind usable as an error value (for errors.Is).
func (k ErrorKind) Error() string { return "microsandbox: " + k.String() }

// Error is what every operation returns on failure.
type Error struct {
	// Kind classifies the failure.
	Kind ErrorKind
	// Code is the API's machine code ("not_found", "path_escape"...), empty
	// for failures on the client side.
	Code string
	// Resource is what the error is about: "volume", "sandbox", "image",
	// "file", or empty.
	Resource string
	// Status is the HTTP status of the answer, 0 for client-side failures.
	Status int
	// Message says what was wrong, naming the field, path or name.
	Message string
	// Cause is the underlying error, if any.
	Cause error
}

// Error returns the message.
func (e *Error) Error() string {
	switch {
	case e.Message == "" && e.Cause != nil:
		return e.Cause.Error()
	case e.Message == "":
		return e.Kind.Error()
	default:
		return e.Message
	}
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

// Is matches the error's kind (errors.Is(err, ErrVolumeNotFound)),
// ErrPathEscape for paths leading out of a volume, and fs.ErrNotExist /
// fs.ErrExist for missing or existing files.
func (e *Error) Is(target error) bool {
	if k, ok := target.(ErrorKind); ok {
		return e.Kind == k
	}
	switch target {
	case ErrPathEscape:
		return e.Code == "path_escape"
	case fs.ErrNotExist:
		return e.Kind == ErrPathNotFound
	case fs.ErrExist:
		return e.Code == "already_exists" && e.Resource == "file"
	}
	return false
}

// IsKind reports whether err (or an error it wraps) is an *Error of kind.
func IsKind(err error, kind ErrorKind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == kind
}

// apiError is the JSON body of an API error.
type apiError struct {
	Code     string `json:"code"`
	Message  string `json:"message"`
	Resource string `json:"resource"`
}

// kindOf maps an API code and resource to a kind.
func kindOf(code, resource string) ErrorKind {
	switch code {
	case "not_found":
		switch resource {
		case "volume":
			return ErrVolumeNotFound
		case "sandbox":
			return ErrSandboxNotFound
		case "image":
			return ErrImageNotFound
		case "file":
			return ErrPathNotFound
		}
	case "already_exists":
		switch resource {
		case "volume":
			return ErrVolumeAlreadyExists
		case "sandbox":
			return ErrSandboxAlreadyExists
		case "file":
			return ErrFilesystem
		}
	case "in_use":
		switch resource {
		case "volume":
			return ErrVolumeInUse
		case "image":
			return ErrImageInUse
		case "sandbox":
			return ErrSandboxStillRunning
		}
	case "invalid_state":
		return ErrSandboxNotRunning
	case "invalid", "path_escape", "too_large":
		return ErrInvalidArgument
	case "invalid_mount":
		return ErrInvalidConfig
	case "conflict":
		if resource == "file" {
			return ErrFilesystem
		}
		return ErrInvalidConfig
	case "no_space":
		return ErrNoSpace
	case "forbidden":
		return ErrFilesystem
	case "registry", "bad_image":
		return ErrImagePullFailed
	case "agent":
		return ErrExecFailed
	case "no_route", "method_not_allowed":
		return ErrUnsupportedOperation
	case "io":
		return ErrIO
	}
	return ErrInternal
}

// decodeError turns an error answer into an *Error.
func decodeError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var a apiError
	if err := json.Unmarshal(body, &a); err != nil || a.Code == "" {
		return &Error{
			Kind:    ErrInternal,
			Status:  resp.StatusCode,
			Message: fmt.Sprintf("msb serve answered %s: %s", resp.Status, string(body)),
		}
	}
	return fromAPI(a, resp.StatusCode)
}

// fromAPI builds the *Error of an API error body.
func fromAPI(a apiError, status int) *Error {
	return &Error{
		Kind:     kindOf(a.Code, a.Resource),
		Code:     a.Code,
		Resource: a.Resource,
		Status:   status,
		Message:  a.Message,
	}
}

// invalid is a client-side ErrInvalidArgument.
func invalid(format string, args ...interface{}) error {
	return &Error{Kind: ErrInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// invalidConfig is a client-side ErrInvalidConfig.
func invalidConfig(format string, args ...interface{}) error {
	return &Error{Kind: ErrInvalidConfig, Message: fmt.Sprintf(format, args...)}
}

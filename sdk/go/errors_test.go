package microsandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

func TestAPIErrorsMatchTheirKind(t *testing.T) {
	cases := []struct {
		code, resource string
		want           error
	}{
		{"not_found", "volume", ErrVolumeNotFound},
		{"not_found", "sandbox", ErrSandboxNotFound},
		{"not_found", "image", ErrImageNotFound},
		{"not_found", "file", fs.ErrNotExist},
		{"already_exists", "volume", ErrVolumeAlreadyExists},
		{"already_exists", "sandbox", ErrSandboxAlreadyExists},
		{"in_use", "volume", ErrVolumeInUse},
		{"in_use", "sandbox", ErrSandboxStillRunning},
		{"in_use", "image", ErrImageInUse},
		{"invalid_state", "sandbox", ErrSandboxNotRunning},
		{"path_escape", "", ErrPathEscape},
		{"invalid_mount", "", ErrInvalidConfig},
		{"invalid", "", ErrInvalidArgument},
		{"no_space", "", ErrNoSpace},
		{"registry", "image", ErrImagePullFailed},
		{"no_route", "", ErrUnsupportedOperation},
		{"vm", "", ErrInternal},
	}
	for _, c := range cases {
		err := fmt.Errorf("wrapped: %w", fromAPI(apiError{Code: c.code, Resource: c.resource, Message: "m"}, 400))
		if !errors.Is(err, c.want) {
			t.Errorf("%s/%s does not match %v", c.code, c.resource, c.want)
		}
	}
	e := fromAPI(apiError{Code: "not_found", Resource: "volume", Message: "volume \"x\" not found"}, 404)
	if errors.Is(e, ErrSandboxNotFound) || errors.Is(e, ErrPathEscape) {
		t.Error("a missing volume matches other errors")
	}
	if !IsKind(e, ErrVolumeNotFound) || e.Error() != `volume "x" not found` {
		t.Errorf("IsKind/Error: %v", e)
	}
	if ErrPathEscape.Error() != "microsandbox: path escapes volume root" {
		t.Error(ErrPathEscape)
	}
}

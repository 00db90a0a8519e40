package admin

import (
	_ "embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// openAPI describes the routes Register mounts; TestOpenAPIMatchesRoutes
// keeps the two in step.
//
//go:embed openapi.json
var openAPI []byte

func (a *API) openAPI(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/json", openAPI)
}

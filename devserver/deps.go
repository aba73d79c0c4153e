package devserver

// Dependencies the devserver's parts and tests use; imported here so that
// go.mod keeps them while those parts are written.
import (
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/gorilla/websocket"
	_ "github.com/hashicorp/mdns"
	_ "github.com/skip2/go-qrcode"
)

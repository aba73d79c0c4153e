//go:build !race

package hyperdrive

const raceEnabled = false

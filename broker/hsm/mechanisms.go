package hsm

import "fmt"

func mechanismName(m uint) string {
	if n, ok := mechanismNames[m]; ok {
		return n
	}
	return fmt.Sprintf("0x%08X", m)
}

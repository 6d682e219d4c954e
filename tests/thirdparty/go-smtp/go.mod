module mailtls.test/gosmtp

go 1.22
